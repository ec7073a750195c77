package net.rcsgate.phone;

import android.Manifest;
import android.app.PendingIntent;
import android.content.ContentResolver;
import android.content.Context;
import android.content.Intent;
import android.content.pm.PackageManager;
import android.database.Cursor;
import android.net.Uri;
import android.os.Build;
import android.provider.Telephony;
import android.telephony.SmsManager;
import android.telephony.SubscriptionInfo;
import android.telephony.SubscriptionManager;
import android.util.Log;
import java.util.ArrayList;
import java.util.List;
import net.rcsgate.phone.core.Event;
import net.rcsgate.phone.sms.IncomingSms;
import net.rcsgate.phone.sms.SmsPlatform;

/** SmsPlatform on a real phone: SmsManager, SubscriptionManager and the SMS provider. */
final class AndroidSms implements SmsPlatform {
    static final String TAG = "rcsgate";
    static final String ACTION_SENT = "net.rcsgate.phone.SMS_SENT";
    static final String ACTION_DELIVERED = "net.rcsgate.phone.SMS_DELIVERED";
    static final String EXTRA_ID = "id";
    static final String EXTRA_PART = "part";

    private final Context context;

    AndroidSms(Context context) {
        this.context = context;
    }

    private boolean granted(String permission) {
        return context.checkSelfPermission(permission) == PackageManager.PERMISSION_GRANTED;
    }

    @Override
    public boolean canSend() {
        return granted(Manifest.permission.SEND_SMS)
                && context.getPackageManager().hasSystemFeature(Build.VERSION.SDK_INT >= 33
                        ? PackageManager.FEATURE_TELEPHONY_MESSAGING : PackageManager.FEATURE_TELEPHONY);
    }

    @Override
    public List<Sim> sims() {
        List<Sim> out = new ArrayList<>();
        if (!granted(Manifest.permission.READ_PHONE_STATE)) return out;
        SubscriptionManager sm = context.getSystemService(SubscriptionManager.class);
        if (sm == null) return out;
        try {
            List<SubscriptionInfo> subs = sm.getActiveSubscriptionInfoList();
            if (subs == null) return out;
            for (SubscriptionInfo s : subs) out.add(new Sim(s.getSimSlotIndex() + 1, s.getSubscriptionId()));
        } catch (SecurityException e) {
            Log.w(TAG, "cannot list SIMs: " + e.getMessage());
        }
        return out;
    }

    private SmsManager manager(int subscriptionId) {
        if (Build.VERSION.SDK_INT >= 31) {
            SmsManager m = context.getSystemService(SmsManager.class);
            return subscriptionId >= 0 ? m.createForSubscriptionId(subscriptionId) : m;
        }
        return subscriptionId >= 0 ? SmsManager.getSmsManagerForSubscriptionId(subscriptionId) : SmsManager.getDefault();
    }

    @Override
    public ArrayList<String> divide(int subscriptionId, String text) {
        try {
            return manager(subscriptionId).divideMessage(text);
        } catch (UnsupportedOperationException e) {
            // No SMS service to ask (some tablets): count parts ourselves; sending will say why.
            return split(text);
        }
    }

    /** Parts of 153 characters (GSM 7-bit with a concatenation header), or 67 for other text. */
    static ArrayList<String> split(String text) {
        int n = 153;
        for (int i = 0; i < text.length(); i++) if (text.charAt(i) > 0x7e) n = 67;
        ArrayList<String> out = new ArrayList<>();
        if (text.length() <= (n == 153 ? 160 : 70)) {
            out.add(text);
            return out;
        }
        for (int i = 0; i < text.length(); i += n) out.add(text.substring(i, Math.min(text.length(), i + n)));
        return out;
    }

    @Override
    public void send(int subscriptionId, String to, ArrayList<String> parts, String id, boolean deliveryReports) throws SendException {
        ArrayList<PendingIntent> sent = new ArrayList<>();
        ArrayList<PendingIntent> delivered = new ArrayList<>();
        for (int i = 0; i < parts.size(); i++) {
            sent.add(status(ACTION_SENT, id, i));
            delivered.add(deliveryReports ? status(ACTION_DELIVERED, id, i) : null);
        }
        try {
            SmsManager m = manager(subscriptionId);
            if (parts.size() == 1) {
                m.sendTextMessage(to, null, parts.get(0), sent.get(0), delivered.get(0));
            } else {
                m.sendMultipartTextMessage(to, null, parts, sent, delivered);
            }
        } catch (SecurityException e) {
            throw new SendException("the app may not send SMS: allow it in the rcsgate app", false);
        } catch (IllegalArgumentException e) {
            throw new SendException("SMS refused by Android: " + e.getMessage(), true);
        } catch (UnsupportedOperationException e) {
            throw new SendException("this device cannot send SMS", true);
        }
    }

    /**
     * The intent a part's result comes back with: explicit (our receiver), one per send and part
     * (the data URI tells them apart), mutable so the platform can add the report's PDU.
     */
    private PendingIntent status(String action, String id, int part) {
        Intent i = new Intent(action, Uri.parse("rcsgate-sms://" + action.substring(action.lastIndexOf('.') + 1) + "/" + Uri.encode(id) + "/" + part));
        i.setClass(context, SmsStatusReceiver.class);
        i.putExtra(EXTRA_ID, id);
        i.putExtra(EXTRA_PART, part);
        int flags = PendingIntent.FLAG_UPDATE_CURRENT | (Build.VERSION.SDK_INT >= 31 ? PendingIntent.FLAG_MUTABLE : 0);
        return PendingIntent.getBroadcast(context, 0, i, flags);
    }

    @Override
    public boolean sentInProvider(String to, String text, long sinceMillis) {
        if (!granted(Manifest.permission.READ_SMS)) return false;
        ContentResolver cr = context.getContentResolver();
        try (Cursor c = cr.query(Telephony.Sms.Sent.CONTENT_URI, new String[] {Telephony.Sms.ADDRESS},
                Telephony.Sms.BODY + "=? AND " + Telephony.Sms.DATE + ">=?", new String[] {text, Long.toString(sinceMillis)}, null)) {
            while (c != null && c.moveToNext()) {
                String a = c.getString(0);
                if (a != null && digits(a).endsWith(last(digits(to), 9))) return true;
            }
        } catch (RuntimeException e) {
            Log.w(TAG, "SMS provider not readable: " + e.getMessage());
        }
        return false;
    }

    static String digits(String s) {
        return s.replaceAll("[^0-9]", "");
    }

    static String last(String s, int n) {
        return s.length() <= n ? s : s.substring(s.length() - n);
    }

    /** Recent history for backfill: up to max rows since sinceMillis, oldest first. */
    List<Event> history(long sinceMillis, int max) {
        List<Event> out = new ArrayList<>();
        if (!granted(Manifest.permission.READ_SMS)) return out;
        List<Sim> sims = sims();
        String[] cols = {Telephony.Sms.TYPE, Telephony.Sms.ADDRESS, Telephony.Sms.BODY, Telephony.Sms.DATE, Telephony.Sms.DATE_SENT, Telephony.Sms.SUBSCRIPTION_ID};
        try (Cursor c = context.getContentResolver().query(Telephony.Sms.CONTENT_URI, cols, Telephony.Sms.DATE + ">=?",
                new String[] {Long.toString(sinceMillis)}, Telephony.Sms.DATE + " DESC LIMIT " + max)) {
            while (c != null && c.moveToNext()) {
                Event ev = IncomingSms.fromProvider(c.getInt(0), c.getString(1), c.getString(2), c.getLong(3), c.getLong(4), c.getInt(5), sims);
                if (ev != null) out.add(0, ev);
            }
        } catch (RuntimeException e) {
            Log.w(TAG, "SMS provider not readable: " + e.getMessage());
        }
        return out;
    }
}
