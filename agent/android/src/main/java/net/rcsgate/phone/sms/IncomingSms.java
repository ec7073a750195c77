package net.rcsgate.phone.sms;

import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import net.rcsgate.phone.core.Event;
import net.rcsgate.phone.core.Ids;

/**
 * Turns what the platform received (the SMS_RECEIVED broadcast's messages, or a row of the SMS
 * provider for backfill) into events for the agent. The id is derived from the sender, the service
 * centre's timestamp and the text, so the broadcast and the provider's row of the same SMS get the
 * same id and the agent stores it once.
 */
public final class IncomingSms {
    /** Text per event at most (the bridge's limit is 64 KiB); longer texts become several events. */
    static final int MAX_TEXT_BYTES = 60 * 1024;
    /** The bridge's limit for a chat. */
    static final int MAX_CHAT = 64;
    static final String EMPTY = "[empty SMS]";

    private IncomingSms() {}

    /** One received SMS, its parts already joined in order. */
    public static final class Received {
        public final String from;
        public final String body;
        public final long sentAt; // the service centre's timestamp, ms (0 = unknown)
        public final long receivedAt;
        public final int subscriptionId; // -1 = unknown

        public Received(String from, String body, long sentAt, long receivedAt, int subscriptionId) {
            this.from = from;
            this.body = body;
            this.sentAt = sentAt;
            this.receivedAt = receivedAt;
            this.subscriptionId = subscriptionId;
        }
    }

    /** The stable id of a received SMS. */
    public static String id(String from, long sentAt, String body) {
        return Ids.hashed("sms-", from, Long.toString(sentAt), body);
    }

    /**
     * The events for r: usually one; an empty body is marked as such, a body over the bridge's
     * limit is split (id.1, id.2, ...), and a SIM the phone does not list is reported as the
     * default one.
     */
    public static List<Event> events(Received r, List<SmsPlatform.Sim> sims) {
        String from = r.from == null ? "" : r.from.trim();
        if (from.isEmpty()) from = "unknown";
        if (from.length() > MAX_CHAT) from = from.substring(0, MAX_CHAT);
        String body = r.body == null ? "" : r.body;
        int slot = 0;
        for (SmsPlatform.Sim s : sims) if (s.subscriptionId == r.subscriptionId) slot = s.slot;
        long ts = r.sentAt > 0 ? r.sentAt : r.receivedAt;
        String id = id(from, r.sentAt, body);
        List<String> chunks = split(body.isEmpty() ? EMPTY : body, MAX_TEXT_BYTES);
        List<Event> out = new ArrayList<>();
        for (int i = 0; i < chunks.size(); i++) {
            String eid = chunks.size() == 1 ? id : id + "." + (i + 1);
            out.add(Event.text(eid, from, from, chunks.get(i), ts, SmsPath.TRANSPORT, slot));
        }
        return out;
    }

    /** Splits s into pieces of at most max UTF-8 bytes, never inside a character. */
    static List<String> split(String s, int max) {
        List<String> out = new ArrayList<>();
        int start = 0;
        int bytes = 0;
        for (int i = 0; i < s.length(); ) {
            int cp = s.codePointAt(i);
            int n = new String(Character.toChars(cp)).getBytes(StandardCharsets.UTF_8).length;
            if (bytes + n > max) {
                out.add(s.substring(start, i));
                start = i;
                bytes = 0;
            }
            bytes += n;
            i += Character.charCount(cp);
        }
        out.add(s.substring(start));
        return out;
    }

    /** A row of the SMS provider (content://sms) as a backfill event; null if it cannot be one. */
    public static Event fromProvider(int type, String address, String body, long date, long dateSent, int subscriptionId, List<SmsPlatform.Sim> sims) {
        final int inbox = 1;
        final int sent = 2;
        if (type == inbox) {
            List<Event> evs = events(new Received(address, body, dateSent, date, subscriptionId), sims);
            return evs.size() == 1 ? evs.get(0).withBackfill() : null;
        }
        if (type == sent) {
            String to = address == null ? "" : address.trim();
            if (to.isEmpty() || to.length() > MAX_CHAT || body == null || body.isEmpty()
                    || body.getBytes(StandardCharsets.UTF_8).length > MAX_TEXT_BYTES) {
                return null;
            }
            int slot = 0;
            for (SmsPlatform.Sim s : sims) if (s.subscriptionId == subscriptionId) slot = s.slot;
            return Event.text(Ids.hashed("smsout-", to, Long.toString(date), body), to, to, body, date, SmsPath.TRANSPORT, slot)
                    .withFromMe().withBackfill();
        }
        return null;
    }
}
