package net.rcsgate.phone.rcs;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertTrue;

import java.io.File;
import java.io.FileOutputStream;
import java.io.IOException;
import java.nio.file.Files;
import java.util.Arrays;
import java.util.Collections;
import java.util.List;
import net.rcsgate.phone.core.Event;
import net.rcsgate.phone.it.Fixtures;
import org.json.JSONObject;
import org.junit.Before;
import org.junit.Test;

/** Notifications → events: once each, in order, across re-posts and restarts; copies left out. */
public class IncomingTest {
    File dir;
    Fakes.Sink sink;
    Fakes.Clock clock;
    Fakes.Later later;
    boolean smsActive;
    Incoming in;

    @Before
    public void setUp() throws Exception {
        dir = Files.createTempDirectory("rcs-incoming").toFile();
        sink = new Fakes.Sink();
        clock = new Fakes.Clock();
        later = new Fakes.Later();
        in = open(Attachments.NONE);
    }

    Incoming open(Attachments a) throws IOException {
        return new Incoming(dir, sink, Contacts.NONE, a, () -> smsActive, later, clock);
    }

    Conversation post(String fixture) throws Exception {
        return in.posted(Fixtures.posted(fixture, null));
    }

    @Test
    public void eachMessageOnceAcrossRepostsAndRestarts() throws Exception {
        Conversation c = post("google-1to1");
        assertEquals(Arrays.asList("Hi! Long time no see", "Are you coming tonight?"), sink.texts());
        post("google-1to1"); // the same notification again (a listener reconnect)
        in = open(Attachments.NONE); // the app restarted (or the phone rebooted)
        post("google-1to1-update"); // re-posted with its history and two new messages
        assertEquals(Arrays.asList("Hi! Long time no see", "Are you coming tonight?", "Yes, with Bob", "Great, see you at 8"), sink.texts());
        Event mine = sink.kind("text").get(2);
        assertTrue("typed on the phone: the owner's message", mine.json.optBoolean("from_me"));
        assertFalse(mine.json.has("from"));
        for (Event e : sink.kind("text")) assertEquals(c.chat, e.chat());
        assertEquals("", sink.kind("text").get(0).transport()); // the notification does not say RCS or SMS
        // The partner's name went once as a contact card (contact sync decides whether Matrix shows it).
        List<Event> cards = sink.kind("contact");
        assertEquals(1, cards.size());
        assertEquals("Ann Example", cards.get(0).json.getJSONObject("contact").getString("name"));
    }

    @Test
    public void anUnstoredMessageIsTriedAgainAtTheNextPost() throws Exception {
        sink.broken = true;
        post("google-1to1");
        assertTrue(sink.events.isEmpty());
        assertEquals(1, in.errors());
        sink.broken = false;
        post("google-1to1");
        assertEquals(2, sink.texts().size());
    }

    @Test
    public void groupsDescribeEveryMemberSeen() throws Exception {
        Conversation c = post("google-group");
        List<Event> groups = sink.kind("group");
        assertTrue(groups.size() >= 1);
        JSONObject last = groups.get(groups.size() - 1).json.getJSONObject("group");
        assertEquals("Family", last.getString("name"));
        assertEquals(3, last.getJSONArray("members").length());
        // A later notification shows only the newest message: Ann and Bob stay members.
        Posted p = Fixtures.posted("google-group", null);
        p.messages.subList(0, 2).clear();
        p.messages.get(0).text = "one more";
        p.messages.get(0).time += 1000;
        in.posted(p);
        int before = groups.size();
        assertEquals("no change in who is in the group: no new group event", before, sink.kind("group").size());
        for (Event e : sink.kind("text")) assertEquals(c.chat, e.chat());
        assertEquals("one more", sink.texts().get(3));
        // The group event comes before the first message of a new member.
        int firstGroup = sink.events.indexOf(sink.kind("group").get(0));
        int firstText = sink.events.indexOf(sink.kind("text").get(0));
        assertTrue(firstGroup < firstText);
    }

    @Test
    public void photosTheAppCannotReadBecomeANotice() throws Exception {
        post("google-image");
        List<String> texts = sink.texts();
        assertEquals(2, texts.size());
        assertTrue(texts.get(0), texts.get(0).startsWith("📷 A photo arrived on the phone"));
        assertTrue(texts.get(0), texts.get(0).contains("Open Google Messages on the phone"));
        assertFalse("\"Photo\" is the app's label, not a caption", texts.get(0).endsWith("Photo"));
        assertTrue("a real caption is kept", texts.get(1).endsWith("\nlook at this view"));
    }

    @Test
    public void photosTheAppCanReadBecomeMedia() throws Exception {
        in = open((uri, mime, dest, max) -> {
            try (FileOutputStream o = new FileOutputStream(dest)) {
                o.write(new byte[] {1, 2, 3});
            }
            return new Attachments.Copy(dest, 3, "039058c6f2c0cb492c533b0a4d14ef77cc0f78abccced5287d84a1a2011cfb81", null);
        });
        post("google-image");
        List<Event> media = sink.kind("media");
        assertEquals(2, media.size());
        JSONObject md = media.get(0).json.getJSONObject("media");
        assertEquals("image/jpeg", md.getString("mime"));
        assertEquals(3, md.getLong("size"));
        assertEquals("file.jpg", md.getString("name"));
        assertEquals("", media.get(0).text());
        assertEquals("look at this view", media.get(1).text());
        File f = new File(media.get(0).json.getString("file"));
        assertTrue(f.isAbsolute() && f.exists());
        assertTrue("the copy is given to the agent, not lent", media.get(0).json.getBoolean("give"));
        // Once the agent took it (no waiting event names it), the copy goes.
        assertEquals(1, in.cleanMedia(Collections.singleton(new File(media.get(1).json.getString("file")).getAbsolutePath())));
        assertFalse(f.exists());
    }

    @Test
    public void theSmsPathsCopyIsLeftOut() throws Exception {
        smsActive = true;
        Posted p = Fixtures.posted("google-unknown-number", null);
        in.posted(p);
        assertTrue("held for the SMS broadcast", sink.events.isEmpty());
        assertEquals(Collections.singletonList(Incoming.SETTLE_MS), later.delays);
        // The broadcast comes (through the Inbox, as the SMS path stored it) ...
        JSONObject sms = Event.text("sms-1", "+12025550143", "+12025550143", "Your table is ready", 1, "sms", 0).json;
        in.smsStored(new Event(sms), clock.now + 1000);
        clock.now += Incoming.SETTLE_MS;
        later.runAll();
        assertTrue("the SMS path has it: " + sink.events, sink.kind("text").isEmpty());
        // ... and a message the SMS path never saw (RCS) still comes, after the wait.
        Posted rcs = Fixtures.posted("google-unknown-number", null);
        rcs.messages.get(0).text = "sent over RCS";
        rcs.messages.get(0).time += 5000;
        in.posted(rcs);
        assertTrue(sink.kind("text").isEmpty());
        clock.now += Incoming.SETTLE_MS;
        later.runAll();
        assertEquals(Collections.singletonList("sent over RCS"), sink.texts());
    }

    @Test
    public void aLateSmsBroadcastIsSeenAsBridged() throws Exception {
        post("google-unknown-number"); // SMS path off: no wait
        assertEquals(1, sink.texts().size());
        assertTrue(in.smsAlreadyBridged("+1 202 555 0143", "Your table is ready", clock.now + 30000));
        assertFalse("another number", in.smsAlreadyBridged("+12025550144", "Your table is ready", clock.now));
        assertFalse("another text", in.smsAlreadyBridged("+12025550143", "Your table is ready!", clock.now));
        assertFalse("much later", in.smsAlreadyBridged("+12025550143", "Your table is ready", clock.now + Traffic.SAME_MESSAGE_MS + 1));
    }

    @Test
    public void aReplyFromMatrixIsNotBridgedBack() throws Exception {
        Conversation c = post("google-1to1");
        in.replied(c.chat, "Yes, with Bob", clock.now);
        in = open(Attachments.NONE); // the echo survives a restart too
        post("google-1to1-update");
        assertEquals(Arrays.asList("Hi! Long time no see", "Are you coming tonight?", "Great, see you at 8"), sink.texts());
    }

    @Test
    public void aBrokenSeenFileLosesNothing() throws Exception {
        post("google-1to1");
        File seen = new File(dir, "rcs-seen.log");
        try (FileOutputStream o = new FileOutputStream(seen, true)) {
            o.write("12345 torn-and-half".getBytes("UTF-8")); // a crash mid-write: no newline
        }
        in = open(Attachments.NONE);
        post("google-1to1-update");
        assertEquals(4, sink.texts().size());
        assertFalse("the torn line is gone", new String(Files.readAllBytes(seen.toPath()), "UTF-8").contains("torn-and-half"));
    }
}
