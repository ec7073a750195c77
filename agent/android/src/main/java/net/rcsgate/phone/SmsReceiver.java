package net.rcsgate.phone;

import android.content.BroadcastReceiver;
import android.content.Context;
import android.content.Intent;
import android.provider.Telephony;
import android.telephony.SmsMessage;
import android.util.Log;
import java.io.IOException;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import net.rcsgate.phone.core.Event;
import net.rcsgate.phone.sms.IncomingSms;

/**
 * SMS_RECEIVED: the SMS goes into the app's Inbox (fsync'd) before this returns, then the service
 * is asked to run so the agent takes it. The platform's default SMS app keeps its own copy either
 * way; nothing here acknowledges anything to anyone before the Inbox holds the message.
 */
public final class SmsReceiver extends BroadcastReceiver {
    @Override
    public void onReceive(Context context, Intent intent) {
        if (!Telephony.Sms.Intents.SMS_RECEIVED_ACTION.equals(intent.getAction())) return;
        Core core = Core.get(context);
        List<IncomingSms.Received> received = parse(intent);
        if (received.isEmpty()) {
            Log.w(AndroidSms.TAG, "SMS broadcast without readable messages ignored");
            core.log.line("app: an SMS broadcast carried no readable message");
            return;
        }
        int stored = 0;
        for (IncomingSms.Received r : received) {
            if (core.rcs.smsAlreadyBridged(r.from, r.body)) {
                // The messaging app's notification brought it to Matrix first (RCS path).
                core.log.line("app: an SMS was bridged already from the messaging app's notification");
                continue;
            }
            for (Event ev : IncomingSms.events(r, core.sms.sims())) {
                try {
                    core.inbox.put(ev);
                    stored++;
                } catch (IOException e) {
                    Log.e(AndroidSms.TAG, "SMS not stored for the agent: " + e.getMessage());
                    core.log.line("app: an SMS could not be stored for the agent: " + e.getMessage() + " (it stays in the phone's messaging app)");
                    core.setRefused("An SMS could not be stored for the server: " + e.getMessage());
                }
            }
        }
        if (stored > 0) AgentService.start(context);
    }

    /**
     * The broadcast's messages joined per sender: a long SMS arrives as several PDUs in one
     * broadcast. A PDU the platform cannot read is skipped (and logged).
     */
    static List<IncomingSms.Received> parse(Intent intent) {
        SmsMessage[] msgs;
        try {
            msgs = Telephony.Sms.Intents.getMessagesFromIntent(intent);
        } catch (RuntimeException e) {
            Log.w(AndroidSms.TAG, "unreadable SMS broadcast: " + e.getMessage());
            msgs = null;
        }
        List<IncomingSms.Received> out = new ArrayList<>();
        if (msgs == null) return out;
        int sub = intent.getIntExtra("android.telephony.extra.SUBSCRIPTION_INDEX", intent.getIntExtra("subscription", -1));
        Map<String, StringBuilder> bodies = new LinkedHashMap<>();
        Map<String, Long> times = new LinkedHashMap<>();
        for (SmsMessage m : msgs) {
            if (m == null) continue;
            String from = m.getDisplayOriginatingAddress();
            if (from == null) from = "";
            StringBuilder b = bodies.get(from);
            if (b == null) {
                b = new StringBuilder();
                bodies.put(from, b);
                times.put(from, m.getTimestampMillis());
            }
            String body = m.getDisplayMessageBody();
            if (body != null) b.append(body);
        }
        long now = System.currentTimeMillis();
        for (Map.Entry<String, StringBuilder> e : bodies.entrySet()) {
            out.add(new IncomingSms.Received(e.getKey(), e.getValue().toString(), times.get(e.getKey()), now, sub));
        }
        return out;
    }
}
