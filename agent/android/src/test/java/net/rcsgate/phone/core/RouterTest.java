package net.rcsgate.phone.core;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertNull;
import static org.junit.Assert.assertSame;
import static org.junit.Assert.assertTrue;

import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.json.JSONObject;
import org.junit.Test;

public class RouterTest {
    /** A path announcing fixed caps and recording what it was asked to do. */
    static final class FakePath implements MessagingPath {
        final String name;
        final Map<String, JSONObject> caps = new LinkedHashMap<>();
        final List<Integer> sims;
        final List<String> sent = new ArrayList<>();

        FakePath(String name, List<Integer> sims, String... transports) throws Exception {
            this.name = name;
            this.sims = sims;
            for (String t : transports) caps.put(t, new JSONObject().put("from", name));
        }

        @Override public String name() { return name; }
        @Override public Map<String, JSONObject> caps() { return caps; }
        @Override public List<Integer> sims() { return sims; }
        @Override public void send(Event ev, Result r) { sent.add(ev.id()); r.ok(); }
        @Override public void typing(String chat, boolean active, Result r) { sent.add("typing " + chat); r.ok(); }
    }

    static final class Answer implements Result {
        Boolean ok;
        boolean permanent;
        String reason = "";

        @Override public void ok() { ok = true; }
        @Override public void fail(boolean permanent, String reason) { ok = false; this.permanent = permanent; this.reason = reason; }
    }

    static Event send(String id, String transport) throws Exception {
        return new Event(new JSONObject().put("type", "send").put("id", id).put("chat", "+12025550123").put("text", "x").put("transport", transport));
    }

    @Test
    public void helloAssemblesCapsPerTransport() throws Exception {
        Router r = new Router();
        r.add(new FakePath("rcs", Arrays.asList(1, 2), "rcs", "sms"));
        r.add(new FakePath("sms", Arrays.asList(1), "sms", "mms"));
        JSONObject h = r.hello("rcsgate-phone/test");
        assertEquals("hello", h.getString("type"));
        assertEquals(1, h.getInt("protocol"));
        JSONObject caps = h.getJSONObject("caps");
        assertEquals("rcs", caps.getJSONObject("rcs").getString("from"));
        assertEquals("rcs", caps.getJSONObject("sms").getString("from")); // the first path wins a transport
        assertEquals("sms", caps.getJSONObject("mms").getString("from"));
        assertEquals("[1,2]", h.getJSONArray("sims").toString());

        Router one = new Router();
        one.add(new FakePath("sms", Collections.singletonList(1), "sms"));
        assertFalse("one SIM: no sims field", one.hello("x").has("sims"));
    }

    @Test
    public void routesByTransportAndRefusesWhatNoPathCarries() throws Exception {
        Router r = new Router();
        FakePath rcs = new FakePath("rcs", Collections.<Integer>emptyList(), "rcs");
        FakePath sms = new FakePath("sms", Collections.<Integer>emptyList(), "sms");
        r.add(rcs);
        r.add(sms);
        Answer a = new Answer();
        r.send(send("$1", "sms"), a);
        assertTrue(a.ok);
        assertEquals(Collections.singletonList("$1"), sms.sent);
        r.send(send("$2", ""), new Answer()); // no preference: the first path
        assertEquals(Collections.singletonList("$2"), rcs.sent);
        assertSame(sms, r.pathFor("sms"));
        Answer refused = new Answer();
        r.send(send("$3", "mms"), refused);
        assertFalse(refused.ok);
        assertTrue(refused.permanent);
        assertEquals("mms is not available on this phone", refused.reason);

        Router empty = new Router();
        empty.add(new FakePath("sms", Collections.<Integer>emptyList())); // no permission yet: no caps
        assertNull(empty.pathFor(""));
        Answer none = new Answer();
        empty.send(send("$4", ""), none);
        assertTrue(none.permanent);
        assertTrue(none.reason.contains("finish its setup"));
    }
}
