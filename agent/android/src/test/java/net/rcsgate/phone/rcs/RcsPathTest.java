package net.rcsgate.phone.rcs;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertNull;
import static org.junit.Assert.assertSame;
import static org.junit.Assert.assertTrue;

import java.io.File;
import java.nio.file.Files;
import java.util.Collections;
import net.rcsgate.phone.core.Event;
import net.rcsgate.phone.core.MessagingPath;
import net.rcsgate.phone.core.Result;
import net.rcsgate.phone.core.Router;
import net.rcsgate.phone.it.FakeMessagingApp;
import net.rcsgate.phone.it.Fixtures;
import net.rcsgate.phone.sms.SendLog;
import org.json.JSONObject;
import org.junit.Before;
import org.junit.Test;

/** Matrix → phone through the messaging app: reply action, compose screen, reads, caps, routing. */
public class RcsPathTest {
    File dir;
    Fakes.Sink sink;
    Fakes.Clock clock;
    Incoming incoming;
    Replies replies;
    FakeMessagingApp app;
    ComposeDriver compose;
    boolean listening = true;
    boolean markRead = true;
    RcsPath path;
    Fakes.Fired reply;
    Fakes.Fired read;

    final RcsPath.Platform platform = new RcsPath.Platform() {
        @Override public boolean listening() { return listening; }
        @Override public boolean composing() { return app.connected; }
        @Override public boolean markRead() { return markRead; }
        @Override public MessagingApp composeApp() { return MessagingApp.of(MessagingApp.GOOGLE); }
    };

    @Before
    public void setUp() throws Exception {
        dir = Files.createTempDirectory("rcs-path").toFile();
        sink = new Fakes.Sink();
        clock = new Fakes.Clock();
        incoming = new Incoming(dir, sink, Contacts.NONE, Attachments.NONE, () -> false, new Fakes.Later(), clock);
        replies = new Replies();
        app = new FakeMessagingApp();
        app.installed.add(MessagingApp.GOOGLE);
        app.screens.put(MessagingApp.GOOGLE, "google-compose");
        compose = new ComposeDriver(app, clock, null);
        path = open();
        reply = new Fakes.Fired();
        read = new Fakes.Fired();
    }

    RcsPath open() throws Exception {
        return new RcsPath(platform, replies, incoming, compose, new SendLog(new File(dir, "rcs-sends.log")), clock);
    }

    /** Posts a fixture whose reply and mark-as-read actions are this test's. */
    Conversation post(String fixture) throws Exception {
        Posted p = Fixtures.posted(fixture, (key, title, isReply) -> isReply ? reply : read);
        Conversation c = incoming.posted(p);
        replies.posted(p, c);
        return c;
    }

    static Event send(String id, String chat, String text) throws Exception {
        return new Event(new JSONObject().put("type", "send").put("id", id).put("kind", "text").put("chat", chat).put("text", text));
    }

    Fakes.Answer deliver(Event ev) {
        Fakes.Answer a = new Fakes.Answer();
        path.send(ev, a);
        return a;
    }

    @Test
    public void capsAreHonest() throws Exception {
        JSONObject rcs = path.caps().get("rcs");
        assertEquals("{\"groups\":true}", rcs.toString());
        listening = false;
        app.connected = false;
        assertTrue("nothing to offer without the listener or the service", path.caps().isEmpty());
        assertTrue(path.sims().isEmpty());
    }

    @Test
    public void aReplyGoesThroughTheCachedActionOnce() throws Exception {
        Conversation c = post("google-1to1");
        Fakes.Answer a = deliver(send("$m1", c.chat, "on my way"));
        assertEquals(Boolean.TRUE, a.ok);
        assertEquals(Collections.singletonList("on my way"), reply.texts);
        // Asked again (the agent's timeout, a crash): answered from the send log, not fired twice.
        path = open();
        Fakes.Answer again = deliver(send("$m1", c.chat, "on my way"));
        assertEquals(Boolean.TRUE, again.ok);
        assertEquals(1, reply.texts.size());
        assertTrue("the compose screen was not used", app.sent.isEmpty());
    }

    @Test
    public void aSendCutByACrashIsNotSentTwice() throws Exception {
        Conversation c = post("google-1to1");
        SendLog log = new SendLog(new File(dir, "rcs-sends.log"));
        log.start("$cut", c.chat, 1, clock.now); // the app died right after recording it
        log.close();
        path = open();
        Fakes.Answer a = deliver(send("$cut", c.chat, "hello?"));
        assertEquals(Boolean.FALSE, a.ok);
        assertTrue(a.permanent);
        assertTrue(a.reason, a.reason.contains("may or may not have sent"));
        assertTrue(reply.texts.isEmpty());
    }

    @Test
    public void aNameOnlyChatWithoutNotificationIsRefusedWithAReason() throws Exception {
        Conversation c = post("google-1to1");
        replies.removed(Fixtures.posted("google-1to1", null).key);
        Fakes.Answer a = deliver(send("$m2", c.chat, "hello"));
        assertEquals(Boolean.FALSE, a.ok);
        assertTrue(a.permanent);
        assertTrue(a.reason, a.reason.contains("notification for this chat is gone"));
    }

    @Test
    public void aCancelledActionFallsBackToTheComposeScreen() throws Exception {
        Conversation c = post("google-unknown-number");
        reply.cancelled = true;
        Fakes.Answer a = deliver(send("$m3", c.chat, "table for two"));
        for (int i = 0; i < 200 && a.ok == null; i++) {
            compose.tick();
            clock.now += 100;
        }
        assertEquals(a.toString(), Boolean.TRUE, a.ok);
        assertEquals(1, app.sent.size());
        assertEquals("+12025550143", app.sent.get(0).number);
        assertNull("the dead action was dropped", replies.get(c.chat));
        // The reply shows up in the re-posted notification: not bridged back.
        Posted p = Fixtures.posted("google-unknown-number", null);
        Posted.Msg mine = new Posted.Msg("table for two", clock.now, null);
        p.messages.add(mine);
        int before = sink.texts().size();
        incoming.posted(p);
        assertEquals(before, sink.texts().size());
    }

    @Test
    public void aNewNumberUsesTheComposeScreenAndReportsWhyItFailed() throws Exception {
        app.screens.put(MessagingApp.GOOGLE, "google-no-send");
        Fakes.Answer a = deliver(send("$m4", "+12025550199", "hi"));
        for (int i = 0; i < 200 && a.ok == null; i++) {
            compose.tick();
            clock.now += 100;
        }
        assertEquals(Boolean.FALSE, a.ok);
        assertTrue(a.permanent);
        assertTrue(a.reason, a.reason.contains("could not find the Send button"));
        // Nothing was pressed, so asking again may try again; it fails the same way.
        Fakes.Answer again = deliver(send("$m4", "+12025550199", "hi"));
        for (int i = 0; i < 200 && again.ok == null; i++) {
            compose.tick();
            clock.now += 100;
        }
        assertEquals(a.reason, again.reason);
        assertTrue(app.sent.isEmpty());
    }

    @Test
    public void lockedPhoneIsATransientFailure() throws Exception {
        app.locked = true;
        Fakes.Answer a = deliver(send("$m5", "+12025550199", "hi"));
        assertEquals(Boolean.FALSE, a.ok);
        assertFalse("the agent offers it again later", a.permanent);
        app.locked = false;
        Fakes.Answer again = deliver(send("$m5", "+12025550199", "hi"));
        for (int i = 0; i < 200 && again.ok == null; i++) {
            compose.tick();
            clock.now += 100;
        }
        assertEquals(again.toString(), Boolean.TRUE, again.ok);
    }

    @Test
    public void matrixReadsMarkTheConversationReadWhenAllowed() throws Exception {
        Conversation c = post("google-1to1");
        Event ev = new Event(new JSONObject().put("type", "send").put("id", "read:$x").put("kind", "read").put("chat", c.chat).put("target", "rcs-1"));
        assertEquals(Boolean.TRUE, deliver(ev).ok);
        assertEquals(1, read.texts.size());
        markRead = false;
        assertEquals(Boolean.TRUE, deliver(ev).ok);
        assertEquals("not fired when the person turned it off", 1, read.texts.size());
        markRead = true;
        replies.removed(Fixtures.posted("google-1to1", null).key);
        assertEquals("no notification: nothing to mark, still ok", Boolean.TRUE, deliver(ev).ok);
    }

    @Test
    public void whatTheMessagingAppCannotDoIsRefused() throws Exception {
        Conversation c = post("google-1to1");
        for (String kind : new String[] {"media", "reaction", "edit", "delete"}) {
            Event ev = new Event(new JSONObject().put("type", "send").put("id", "$" + kind).put("kind", kind).put("chat", c.chat).put("target", "x"));
            Fakes.Answer a = deliver(ev);
            assertEquals(kind, Boolean.FALSE, a.ok);
            assertTrue(kind, a.permanent);
            assertTrue(a.reason, a.reason.startsWith(kind + " is not supported through the phone's messaging app"));
        }
        Fakes.Answer t = new Fakes.Answer();
        path.typing(c.chat, true, t);
        assertTrue(t.permanent);
        assertTrue(reply.texts.isEmpty());
    }

    @Test
    public void theRouterPrefersThisPathForItsChats() throws Exception {
        Conversation named = post("google-1to1");
        Conversation group = post("google-group");
        MessagingPath sms = new MessagingPath() {
            @Override public String name() { return "sms"; }
            @Override public java.util.Map<String, JSONObject> caps() { return Collections.singletonMap("sms", new JSONObject()); }
            @Override public java.util.List<Integer> sims() { return Collections.emptyList(); }
            @Override public void send(Event ev, Result r) { r.ok(); }
            @Override public void typing(String chat, boolean active, Result r) { r.ok(); }
        };
        Router r = new Router();
        r.add(sms);
        r.add(path);
        assertSame(path, r.pathFor(send("$a", named.chat, "x")));
        assertSame(path, r.pathFor(send("$b", group.chat, "x")));
        assertSame("a number with the compose screen on", path, r.pathFor(send("$c", "+12025550100", "x")));
        Event smsOnly = new Event(send("$d", "+12025550100", "x").json.put("transport", "sms"));
        assertSame("the chat asks for SMS", sms, r.pathFor(smsOnly));
        app.connected = false;
        assertSame("no compose screen: numbers go as SMS", sms, r.pathFor(send("$e", "+12025550100", "x")));
        assertSame("an unknown group stays with the first path", sms, r.pathFor(send("$f", "g:unknown", "x")));
        JSONObject hello = r.hello("t");
        assertTrue(hello.getJSONObject("caps").has("rcs"));
        assertTrue(hello.getJSONObject("caps").has("sms"));
    }
}
