package net.rcsgate.phone.sms;

import java.util.ArrayList;
import java.util.List;

/**
 * The platform's SMS as the SMS path needs it: SmsManager, SubscriptionManager and the SMS
 * provider behind one interface, so the path's logic runs on a JVM against a fake (tests, the
 * integration test) and on the phone against AndroidSms.
 */
public interface SmsPlatform {
    /** An active SIM: its 1-based slot and its subscription id. */
    final class Sim {
        public final int slot;
        public final int subscriptionId;

        public Sim(int slot, int subscriptionId) {
            this.slot = slot;
            this.subscriptionId = subscriptionId;
        }
    }

    /** Thrown when the platform refused to take a message at all. */
    final class SendException extends Exception {
        public final boolean permanent;

        public SendException(String message, boolean permanent) {
            super(message);
            this.permanent = permanent;
        }
    }

    /** Whether the app may send SMS (the SEND_SMS permission). */
    boolean canSend();

    /** Active SIMs (empty when unknown, e.g. without READ_PHONE_STATE: then the default one). */
    List<Sim> sims();

    /** SmsManager.divideMessage for the SIM (subscription id, -1 = default). */
    ArrayList<String> divide(int subscriptionId, String text);

    /**
     * Hands the parts to the radio. For each part the platform later reports the sent result
     * (and, if asked, the delivery report) to SmsPath.onSent / onDelivered with id and part index.
     */
    void send(int subscriptionId, String to, ArrayList<String> parts, String id, boolean deliveryReports) throws SendException;

    /**
     * Whether the SMS provider holds a message sent to `to` with this text since sinceMillis (the
     * platform writes what an app that is not the default SMS app sends). Used after a crash in the
     * middle of a send to tell "went out" from "never left".
     */
    boolean sentInProvider(String to, String text, long sinceMillis);
}
