package net.rcsgate.phone.sms;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertNull;
import static org.junit.Assert.assertTrue;

import java.io.File;
import java.util.Arrays;
import java.util.Collections;
import net.rcsgate.phone.core.Event;
import net.rcsgate.phone.core.Inbox;
import net.rcsgate.phone.core.Result;
import org.json.JSONObject;
import org.junit.Before;
import org.junit.Rule;
import org.junit.Test;
import org.junit.rules.TemporaryFolder;

public class SmsPathTest {
    @Rule public TemporaryFolder tmp = new TemporaryFolder();

    static final class Answer implements Result {
        int answers;
        Boolean ok;
        boolean permanent;
        String reason = "";

        @Override public void ok() { answers++; ok = true; }
        @Override public void fail(boolean permanent, String reason) { answers++; ok = false; this.permanent = permanent; this.reason = reason; }
    }

    private FakeSms sms;
    private SendLog log;
    private Inbox inbox;
    private SmsPath path;

    @Before
    public void setUp() throws Exception {
        sms = new FakeSms();
        sms.sims.add(new SmsPlatform.Sim(1, 11));
        sms.sims.add(new SmsPlatform.Sim(2, 12));
        log = new SendLog(new File(tmp.getRoot(), "sends.log"));
        inbox = new Inbox(new File(tmp.getRoot(), "inbox.log"));
        path = new SmsPath(sms, log, inbox, () -> 1767225600000L);
    }

    static Event send(String id, String chat, String text, int sim) throws Exception {
        JSONObject o = new JSONObject().put("type", "send").put("req", "1").put("id", id).put("chat", chat).put("text", text);
        if (sim > 0) o.put("sim", sim);
        return new Event(o);
    }

    @Test
    public void capsFollowThePermission() {
        assertTrue(path.caps().containsKey("sms"));
        assertEquals(Arrays.asList(1, 2), path.sims());
        sms.canSend = false;
        assertTrue(path.caps().isEmpty());
    }

    @Test
    public void sentIntentAnswersAndARepeatIsNotSentAgain() throws Exception {
        Answer a = new Answer();
        path.send(send("$e1", "+12025550123", "hello", 2), a);
        assertEquals(Collections.singletonList("12 +12025550123 1 $e1"), sms.sends);
        assertEquals("answered only when the radio took it", 0, a.answers);
        Answer again = new Answer(); // the agent timed out and asks again meanwhile
        path.send(send("$e1", "+12025550123", "hello", 2), again);
        assertEquals(1, sms.sends.size());
        path.onSent("$e1", 0, SmsPath.RESULT_OK);
        assertEquals(Boolean.TRUE, a.ok);
        assertEquals(Boolean.TRUE, again.ok);
        Answer later = new Answer();
        path.send(send("$e1", "+12025550123", "hello", 2), later);
        assertEquals(Boolean.TRUE, later.ok);
        assertEquals(1, sms.sends.size());

        // Delivered: one receipt event for the send, once.
        path.onDelivered("$e1", 0, SmsPath.Delivery.PENDING);
        assertEquals(0, inbox.size());
        path.onDelivered("$e1", 0, SmsPath.Delivery.DELIVERED);
        path.onDelivered("$e1", 0, SmsPath.Delivery.DELIVERED);
        assertEquals(1, inbox.size());
        Event r = inbox.waiting().get(0);
        assertEquals("receipt", r.kind());
        assertEquals("$e1", r.json.getString("target"));
        assertEquals("delivered", r.json.getString("state"));
        assertEquals("+12025550123", r.chat());
    }

    @Test
    public void multipartWaitsForEveryPart() throws Exception {
        sms.partLen = 10;
        Answer a = new Answer();
        path.send(send("$m", "+12025550123", "0123456789abcdefghij01234", 0), a);
        assertEquals(Collections.singletonList("-1 +12025550123 3 $m"), sms.sends);
        path.onSent("$m", 0, SmsPath.RESULT_OK);
        path.onSent("$m", 2, SmsPath.RESULT_OK);
        assertEquals(0, a.answers);
        path.onSent("$m", 1, SmsPath.RESULT_OK);
        assertEquals(Boolean.TRUE, a.ok);
        path.onDelivered("$m", 0, SmsPath.Delivery.DELIVERED);
        path.onDelivered("$m", 1, SmsPath.Delivery.FAILED); // one part failed: the send failed
        Event r = inbox.waiting().get(0);
        assertEquals("failed", r.json.getString("state"));
        assertTrue(r.json.getString("reason").contains("could not deliver"));
    }

    @Test
    public void failuresSayWhyAndTellTransientFromPermanent() throws Exception {
        Answer radioOff = new Answer();
        path.send(send("$r", "+12025550123", "x", 0), radioOff);
        path.onSent("$r", 0, 2); // RESULT_ERROR_RADIO_OFF: nothing left the phone
        assertFalse(radioOff.ok);
        assertFalse(radioOff.permanent);
        assertTrue(radioOff.reason.contains("radio is off"));
        assertNull("forgotten: the retry sends it", log.get("$r"));
        Answer retry = new Answer();
        path.send(send("$r", "+12025550123", "x", 0), retry);
        assertEquals(2, sms.sends.size());
        path.onSent("$r", 0, SmsPath.RESULT_OK);
        assertEquals(Boolean.TRUE, retry.ok);

        sms.partLen = 1;
        Answer partly = new Answer();
        path.send(send("$p", "+12025550123", "ab", 0), partly);
        path.onSent("$p", 0, SmsPath.RESULT_OK);
        path.onSent("$p", 1, 1);
        assertTrue(partly.permanent);
        assertEquals("only 1 of 2 parts were sent (the network refused the SMS)", partly.reason);
    }

    @Test
    public void badInputIsRefusedWithAReason() throws Exception {
        String[][] cases = {
            {"+12025550123", "", "0", "empty message"},
            {"+12025550123", "   ", "0", "empty message"},
            {"+12025550123", "x", "3", "SIM 3 is not in this phone (it has SIM 1, 2)"},
            {"hello", "x", "0", "is not a phone number"},
            {"g:9", "x", "0", "group chats are not supported"},
            {"+12025550123", new String(new char[1700]).replace('\0', 'y'), "0", "too long for SMS: 11 parts (at most 10)"},
        };
        for (String[] c : cases) {
            Answer a = new Answer();
            path.send(send("$bad", c[0], c[1], Integer.parseInt(c[2])), a);
            assertEquals(c[3], Boolean.FALSE, a.ok);
            assertTrue(c[3], a.permanent);
            assertTrue(a.reason + " should say " + c[3], a.reason.contains(c[3]));
        }
        Answer react = new Answer();
        path.send(new Event(new JSONObject().put("id", "$x").put("kind", "reaction").put("chat", "+12025550123").put("emoji", "👍")), react);
        assertEquals("reaction is not supported over sms", react.reason);
        Answer typing = new Answer();
        path.typing("+12025550123", true, typing);
        assertTrue(typing.permanent);
        assertTrue("nothing reached the radio", sms.sends.isEmpty());
        assertEquals("nothing recorded", 0, log.size());
    }

    @Test
    public void platformRefusalIsAnswered() throws Exception {
        sms.refuse = new SmsPlatform.SendException("the app may not send SMS", false);
        Answer a = new Answer();
        path.send(send("$n", "+12025550123", "x", 0), a);
        assertFalse(a.permanent);
        assertNull(log.get("$n"));
    }

    @Test
    public void aSendCutByTheAppsDeathIsNeverDoubled() throws Exception {
        path.send(send("$c", "+12025550123", "x", 0), new Answer());
        log.close();
        // The app died before the sent intent. A new process asks the provider.
        SendLog log2 = new SendLog(new File(tmp.getRoot(), "sends.log"));
        SmsPath p2 = new SmsPath(sms, log2, inbox, () -> 1767225660000L);
        sms.inProvider = true;
        Answer went = new Answer();
        p2.send(send("$c", "+12025550123", "x", 0), went);
        assertEquals(Boolean.TRUE, went.ok);
        assertEquals(1, sms.sends.size());

        p2.send(send("$d", "+12025550123", "y", 0), new Answer());
        log2.close();
        SendLog log3 = new SendLog(new File(tmp.getRoot(), "sends.log"));
        SmsPath p3 = new SmsPath(sms, log3, inbox, () -> 1767225720000L);
        sms.inProvider = false;
        Answer unknown = new Answer();
        p3.send(send("$d", "+12025550123", "y", 0), unknown);
        assertTrue(unknown.permanent);
        assertTrue(unknown.reason.contains("not sending it twice"));
        assertEquals(2, sms.sends.size());
        // A late sent intent for it changes nothing.
        p3.onSent("$d", 0, SmsPath.RESULT_OK);
        assertEquals(SendLog.State.FAILED, log3.get("$d").state);
    }

    @Test
    public void logCompactsAndKeepsOutcomes() throws Exception {
        for (int i = 0; i < 60; i++) {
            path.send(send("$k" + i, "+12025550123", "x", 0), new Answer());
            path.onSent("$k" + i, 0, SmsPath.RESULT_OK);
        }
        log.compact(1767225600000L);
        log.close();
        SendLog again = new SendLog(new File(tmp.getRoot(), "sends.log"));
        assertEquals(60, again.size());
        assertEquals(SendLog.State.SENT, again.get("$k59").state);
        again.compact(1767225600000L + SendLog.KEEP_MS + 1);
        assertEquals("a week later only unfinished sends stay", 0, again.size());
    }
}
