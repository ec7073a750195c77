package net.rcsgate.phone.sms;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.logging.Level;
import java.util.logging.Logger;
import net.rcsgate.phone.core.Event;
import net.rcsgate.phone.core.EventSink;
import net.rcsgate.phone.core.Ids;
import net.rcsgate.phone.core.MessagingPath;
import net.rcsgate.phone.core.Result;
import org.json.JSONException;
import org.json.JSONObject;

/**
 * SMS through the platform's own APIs: the agent's sends go to SmsManager (one part or many), the
 * sent and delivered intents become the send's result and a delivery receipt. Every send is
 * recorded in the SendLog first, so a send asked for again is answered from there and never goes
 * out twice. Receiving is IncomingSms's (a broadcast receiver puts it in the Inbox).
 */
public final class SmsPath implements MessagingPath {
    public static final String TRANSPORT = "sms";
    /** Longest text sent as SMS: more parts than this is refused (and said so). */
    public static final int MAX_PARTS = 10;

    /** SmsManager's sent results (android.telephony.SmsManager.RESULT_*; Activity.RESULT_OK). */
    public static final int RESULT_OK = -1;
    static final int RESULT_ERROR_GENERIC_FAILURE = 1;
    static final int RESULT_ERROR_RADIO_OFF = 2;
    static final int RESULT_ERROR_NULL_PDU = 3;
    static final int RESULT_ERROR_NO_SERVICE = 4;
    static final int RESULT_ERROR_LIMIT_EXCEEDED = 5;
    static final int RESULT_RADIO_NOT_AVAILABLE = 9;

    /** A delivery report, as the platform reads its status. */
    public enum Delivery { PENDING, DELIVERED, FAILED }

    private static final Logger LOG = Logger.getLogger("rcsgate.sms");

    private final SmsPlatform platform;
    private final SendLog log;
    private final EventSink inbox;
    private final Clock clock;
    /** Results waiting for the sent intents of a send started by this process. */
    private final Map<String, List<Result>> waiting = new HashMap<>();

    public interface Clock {
        long now();
    }

    public SmsPath(SmsPlatform platform, SendLog log, EventSink inbox, Clock clock) {
        this.platform = platform;
        this.log = log;
        this.inbox = inbox;
        this.clock = clock;
    }

    @Override
    public String name() {
        return "sms";
    }

    @Override
    public Map<String, JSONObject> caps() {
        if (!platform.canSend()) return Collections.emptyMap();
        Map<String, JSONObject> m = new LinkedHashMap<>();
        JSONObject c = new JSONObject();
        try {
            c.put("delivery_reports", true);
        } catch (JSONException e) {
            throw new IllegalStateException(e);
        }
        m.put(TRANSPORT, c);
        return m;
    }

    @Override
    public List<Integer> sims() {
        List<Integer> out = new ArrayList<>();
        for (SmsPlatform.Sim s : platform.sims()) out.add(s.slot);
        return out;
    }

    @Override
    public void typing(String chat, boolean active, Result result) {
        result.fail(true, "typing is not supported over sms");
    }

    /** Why ev cannot go out as SMS at all, or null. */
    String refuse(Event ev) {
        String kind = ev.kind();
        if (!kind.equals(Event.KIND_TEXT)) return kind + " is not supported over sms";
        String chat = ev.chat();
        if (chat.startsWith("g:")) return "group chats are not supported over sms by this phone yet";
        if (!validNumber(chat)) return "\"" + clip(chat, 32) + "\" is not a phone number SMS can reach";
        if (ev.text().trim().isEmpty()) return "empty message: SMS cannot carry it";
        return null;
    }

    /** + and 3 to 15 digits, or a short code of 3 to 8 digits. */
    static boolean validNumber(String s) {
        return s.matches("\\+[0-9]{3,15}") || s.matches("[0-9]{3,15}");
    }

    @Override
    public void send(Event ev, Result result) {
        String why = refuse(ev);
        if (why != null) {
            result.fail(true, why);
            return;
        }
        String id = ev.id();
        int subId = -1;
        if (ev.sim() > 0) {
            SmsPlatform.Sim sim = simFor(ev.sim());
            if (sim == null) {
                result.fail(true, "SIM " + ev.sim() + " is not in this phone" + simsHint());
                return;
            }
            subId = sim.subscriptionId;
        }
        ArrayList<String> parts;
        try {
            synchronized (this) {
                SendLog.Rec rec = log.get(id);
                if (rec != null && answerFrom(rec, ev, result)) return;
                parts = platform.divide(subId, ev.text());
                if (parts.isEmpty()) parts.add(ev.text());
                if (parts.size() > MAX_PARTS) {
                    result.fail(true, "too long for SMS: " + parts.size() + " parts (at most " + MAX_PARTS + "); send shorter messages");
                    return;
                }
                log.start(id, ev.chat(), parts.size(), clock.now());
                waiting.computeIfAbsent(id, k -> new ArrayList<>()).add(result);
            }
        } catch (IOException e) {
            LOG.log(Level.SEVERE, "send log not written; not sending", e);
            result.fail(false, "the phone could not record the send (storage full?)");
            return;
        }
        try {
            platform.send(subId, ev.chat(), parts, id, true);
        } catch (SmsPlatform.SendException e) {
            List<Result> rs;
            synchronized (this) {
                rs = waiting.remove(id);
                try {
                    if (e.permanent) log.failed(id, e.getMessage());
                    else log.forget(id); // it never left: a retry may send it
                } catch (IOException io) {
                    LOG.log(Level.SEVERE, "send log not written", io);
                }
            }
            if (rs != null) for (Result r : rs) r.fail(e.permanent, e.getMessage());
        }
    }

    /** Answers a send asked for again from its record; false if it must be sent (again). */
    private boolean answerFrom(SendLog.Rec rec, Event ev, Result result) throws IOException {
        if (SendLog.answer(rec, result)) return true;
        if (waiting.containsKey(rec.id)) {
            waiting.get(rec.id).add(result); // still going out: the same answer for both
            return true;
        }
        // Started by an earlier run of the app that died before the outcome was known.
        if (platform.sentInProvider(ev.chat(), ev.text(), rec.startedAt - 60000)) {
            log.sent(rec.id);
            result.ok();
            return true;
        }
        log.failed(rec.id, SendLog.UNKNOWN_OUTCOME);
        result.fail(true, SendLog.UNKNOWN_OUTCOME);
        return true;
    }

    private SmsPlatform.Sim simFor(int slot) {
        for (SmsPlatform.Sim s : platform.sims()) if (s.slot == slot) return s;
        return null;
    }

    private String simsHint() {
        List<Integer> slots = sims();
        if (slots.isEmpty()) return "";
        StringBuilder sb = new StringBuilder(" (it has SIM ");
        for (int i = 0; i < slots.size(); i++) sb.append(i == 0 ? "" : ", ").append(slots.get(i));
        return sb.append(")").toString();
    }

    /**
     * A part's sent intent came back (SmsStatusReceiver). Once every part has, the send's outcome
     * is recorded and every waiting result answered.
     */
    public void onSent(String id, int part, int resultCode) {
        List<Result> rs = null;
        boolean ok = false;
        boolean permanent = true;
        String reason = "";
        synchronized (this) {
            SendLog.Rec rec = log.get(id);
            if (rec == null || rec.state != SendLog.State.STARTED || part < 0 || part >= rec.parts) return;
            try {
                log.part(id, part, resultCode == RESULT_OK, resultCode);
                if (!rec.allSent()) return;
                int okParts = 0;
                int code = RESULT_OK;
                for (int i = 0; i < rec.parts; i++) {
                    if (rec.sentOk[i]) okParts++;
                    else code = rec.sentCode[i];
                }
                if (okParts == rec.parts) {
                    log.sent(id);
                    ok = true;
                } else if (okParts == 0 && transient_(code)) {
                    log.forget(id); // nothing left the phone: the agent's retry sends it again
                    permanent = false;
                    reason = describe(code) + "; will retry";
                } else {
                    reason = okParts == 0 ? describe(code) : "only " + okParts + " of " + rec.parts + " parts were sent (" + describe(code) + ")";
                    log.failed(id, reason);
                }
            } catch (IOException e) {
                LOG.log(Level.SEVERE, "send log not written", e);
                return; // the result stays open; the agent asks again after its timeout
            }
            rs = waiting.remove(id);
        }
        if (rs == null) return;
        for (Result r : rs) {
            if (ok) r.ok();
            else r.fail(permanent, reason);
        }
    }

    /**
     * A part's delivery report came (SmsStatusReceiver). Once every part is delivered (or one
     * failed) a receipt event for the send goes to the Inbox, once.
     */
    public void onDelivered(String id, int part, Delivery d) {
        if (d == Delivery.PENDING) return;
        synchronized (this) {
            SendLog.Rec rec = log.get(id);
            if (rec == null || rec.receiptDone || part < 0 || part >= rec.parts) return;
            try {
                log.deliveredPart(id, part, d == Delivery.DELIVERED);
                boolean failed = false;
                for (int i = 0; i < rec.parts; i++) if (rec.delivSeen[i] && !rec.delivOk[i]) failed = true;
                if (!failed && !rec.allDelivered()) return;
                Event receipt = Event.receipt(Ids.hashed("dr-", id), rec.chat, id,
                        failed ? Event.STATE_FAILED : Event.STATE_DELIVERED,
                        failed ? "the network could not deliver the SMS" : "", TRANSPORT);
                inbox.put(receipt);
                log.receiptDone(id);
            } catch (IOException e) {
                LOG.log(Level.SEVERE, "delivery report not stored", e);
            }
        }
    }

    static boolean transient_(int code) {
        return code == RESULT_ERROR_RADIO_OFF || code == RESULT_ERROR_NO_SERVICE
                || code == RESULT_ERROR_LIMIT_EXCEEDED || code == RESULT_RADIO_NOT_AVAILABLE;
    }

    static String describe(int code) {
        switch (code) {
            case RESULT_ERROR_GENERIC_FAILURE:
                return "the network refused the SMS";
            case RESULT_ERROR_RADIO_OFF:
                return "the phone's radio is off (flight mode?)";
            case RESULT_ERROR_NULL_PDU:
                return "the SMS could not be encoded";
            case RESULT_ERROR_NO_SERVICE:
                return "no mobile service";
            case RESULT_ERROR_LIMIT_EXCEEDED:
                return "Android's SMS rate limit was reached";
            case RESULT_RADIO_NOT_AVAILABLE:
                return "the radio is not available";
            default:
                return "SMS error " + code;
        }
    }

    static String clip(String s, int n) {
        return s.length() > n ? s.substring(0, n) + "…" : s;
    }

    static int utf8Len(String s) {
        return s.getBytes(StandardCharsets.UTF_8).length;
    }
}
