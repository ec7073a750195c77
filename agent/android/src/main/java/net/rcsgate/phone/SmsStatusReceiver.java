package net.rcsgate.phone;

import android.content.BroadcastReceiver;
import android.content.Context;
import android.content.Intent;
import android.telephony.SmsMessage;
import net.rcsgate.phone.sms.SmsPath;

/** The sent and delivered intents of our SMS parts: the send's result, then its receipt. */
public final class SmsStatusReceiver extends BroadcastReceiver {
    @Override
    public void onReceive(Context context, Intent intent) {
        String id = intent.getStringExtra(AndroidSms.EXTRA_ID);
        int part = intent.getIntExtra(AndroidSms.EXTRA_PART, -1);
        if (id == null || part < 0) return;
        Core core = Core.get(context);
        if (AndroidSms.ACTION_SENT.equals(intent.getAction())) {
            core.smsPath.onSent(id, part, getResultCode());
        } else if (AndroidSms.ACTION_DELIVERED.equals(intent.getAction())) {
            core.smsPath.onDelivered(id, part, delivery(intent));
            AgentService.start(context); // the receipt waits in the Inbox for the agent
        }
    }

    /** The status report's outcome: GSM TP-Status (3GPP TS 23.040 9.2.3.15) or CDMA's. */
    static SmsPath.Delivery delivery(Intent intent) {
        byte[] pdu = intent.getByteArrayExtra("pdu");
        String format = intent.getStringExtra("format");
        if (pdu == null) return SmsPath.Delivery.PENDING;
        SmsMessage m;
        try {
            m = SmsMessage.createFromPdu(pdu, format);
        } catch (RuntimeException e) {
            return SmsPath.Delivery.PENDING;
        }
        if (m == null) return SmsPath.Delivery.PENDING;
        int status = m.getStatus();
        if ("3gpp2".equals(format)) {
            // CDMA: error class in bits 24-25 (0 = none, 2 = temporary, 3 = permanent).
            int errorClass = (status >> 24) & 0x03;
            if (errorClass == 0) return SmsPath.Delivery.DELIVERED;
            return errorClass == 3 ? SmsPath.Delivery.FAILED : SmsPath.Delivery.PENDING;
        }
        if (status < 0x20) return SmsPath.Delivery.DELIVERED;
        if (status < 0x40) return SmsPath.Delivery.PENDING; // still trying
        return SmsPath.Delivery.FAILED;
    }
}
