package net.rcsgate.phone.rcs;

import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import java.io.File;
import java.nio.file.Files;
import java.util.Random;
import net.rcsgate.phone.core.Event;
import net.rcsgate.phone.core.Ids;
import net.rcsgate.phone.it.Fixtures;
import org.junit.Test;

/**
 * Random and cut-down notifications into the parser and the incoming side: never an exception,
 * and whatever comes out is valid on the wire (the agent would refuse it for good otherwise).
 * Bundles themselves (wrong types, truncated parcels) are fuzzed in NotificationReaderTest.
 */
public class FuzzParserTest {
    static final long SEED = Long.getLong("rcsgate.fuzz.seed", 20261201L);
    static final int ROUNDS = Integer.getInteger("rcsgate.fuzz.rounds", 3000);

    /** The wire's rules for a chat or sender (internal/wire: validParty, MaxChatLen). */
    static boolean validParty(String s) {
        if (s == null || s.isEmpty() || s.length() > 64) return false;
        if (s.startsWith("c:")) return s.substring(2).matches("[A-Za-z0-9._-]{1,62}");
        if (s.startsWith("g:")) return s.length() > 2;
        return s.matches("\\+?[0-9]{3,15}");
    }

    static String junk(Random r) {
        switch (r.nextInt(9)) {
            case 0: return null;
            case 1: return "";
            case 2: return "+1 202-555-01" + r.nextInt(100);
            case 3: return "tel:+" + r.nextInt(1000000);
            case 4: return "content://com.android.contacts/contacts/lookup/" + r.nextInt();
            case 5: {
                StringBuilder sb = new StringBuilder();
                int n = r.nextInt(3) == 0 ? 70000 + r.nextInt(2000) : r.nextInt(40);
                for (int i = 0; i < n; i++) sb.append((char) r.nextInt(0x10000)); // lone surrogates too
                return sb.toString();
            }
            case 6: return "\u0000\n\t\u202e" + r.nextInt();
            case 7: return "Ann Example";
            default: return Long.toString(r.nextLong());
        }
    }

    static Posted random(Random r) {
        Posted p = new Posted();
        p.pkg = r.nextInt(8) == 0 ? junk(r) : (r.nextBoolean() ? MessagingApp.GOOGLE : MessagingApp.SAMSUNG);
        if (p.pkg == null) p.pkg = "";
        p.key = "k" + r.nextInt(5);
        p.postTime = r.nextInt(4) == 0 ? -r.nextLong() : r.nextLong();
        p.shortcutId = junk(r);
        p.groupSummary = r.nextInt(10) == 0;
        p.title = junk(r);
        p.text = junk(r);
        p.conversationTitle = junk(r);
        p.isGroup = r.nextInt(3) == 0 ? null : r.nextBoolean();
        p.selfName = junk(r);
        p.selfKey = junk(r);
        int n = r.nextInt(6) == 0 ? 150 + r.nextInt(100) : r.nextInt(6);
        for (int i = 0; i < n; i++) {
            if (r.nextInt(20) == 0) {
                p.messages.add(null);
                continue;
            }
            Posted.Msg m = new Posted.Msg();
            m.text = junk(r);
            m.time = r.nextLong();
            m.senderName = junk(r);
            m.senderKey = junk(r);
            m.senderUri = junk(r);
            m.noSender = r.nextInt(4) == 0;
            m.mime = r.nextBoolean() ? null : junk(r);
            m.dataUri = r.nextBoolean() ? null : junk(r);
            p.messages.add(m);
        }
        return p;
    }

    @Test
    public void randomNotificationsNeverBreakTheParser() {
        Random r = new Random(SEED);
        NotificationParser withContacts = new NotificationParser((uri, name) -> {
            if (name != null && name.hashCode() % 3 == 0) throw new IllegalStateException("provider died");
            return name != null && name.hashCode() % 3 == 1 ? name : null; // garbage "numbers" too
        });
        for (int i = 0; i < ROUNDS; i++) {
            Posted p = random(r);
            Conversation c;
            try {
                c = (i % 2 == 0 ? NotificationParserTest.PLAIN : withContacts).parse(p);
            } catch (RuntimeException e) {
                throw new AssertionError("round " + i + " (seed " + SEED + "): " + e, e);
            }
            if (c == null) continue;
            assertTrue("round " + i + ": chat " + c.chat, validParty(c.chat));
            assertTrue(c.name.getBytes(java.nio.charset.StandardCharsets.UTF_8).length <= NotificationParser.MAX_NAME_BYTES);
            for (Conversation.Message m : c.messages) {
                assertTrue("round " + i + ": id", Ids.valid(m.id));
                assertTrue("round " + i + ": from " + m.from, m.fromMe ? m.from.isEmpty() : validParty(m.from));
                assertTrue(m.text.getBytes(java.nio.charset.StandardCharsets.UTF_8).length <= NotificationParser.MAX_TEXT_BYTES);
            }
        }
    }

    @Test
    public void truncatedNotificationsStoreOnlyValidEvents() throws Exception {
        // Every prefix of every fixture's message list, and of its fields, through the incoming side.
        File dir = Files.createTempDirectory("rcs-fuzz").toFile();
        Fakes.Sink sink = new Fakes.Sink();
        Fakes.Clock clock = new Fakes.Clock();
        Incoming in = new Incoming(dir, sink, Contacts.NONE, Attachments.NONE, () -> false, new Fakes.Later(), clock);
        Random r = new Random(SEED);
        for (String name : Fixtures.names()) {
            Posted full = Fixtures.posted(name, null);
            for (int cut = 0; cut <= full.messages.size(); cut++) {
                Posted p = Fixtures.posted(name, null);
                p.messages.subList(cut, p.messages.size()).clear();
                if (r.nextBoolean()) p.title = null;
                if (r.nextBoolean()) p.shortcutId = null;
                if (r.nextBoolean()) p.isGroup = null;
                for (Posted.Msg m : p.messages) {
                    if (r.nextBoolean()) m.text = m.text == null ? null : m.text.substring(0, m.text.length() / 2);
                    if (r.nextInt(3) == 0) m.senderName = null;
                }
                try {
                    in.posted(p);
                } catch (RuntimeException e) {
                    fail(name + " cut at " + cut + ": " + e);
                }
            }
        }
        for (Event ev : sink.events) {
            assertTrue(ev.line(), Ids.valid(ev.id()));
            assertTrue(ev.line(), validParty(ev.chat()));
            String from = ev.json.optString("from", "");
            assertTrue(ev.line(), ev.json.optBoolean("from_me") ? from.isEmpty() : validParty(from));
        }
        assertTrue("the fixtures stored something", sink.events.size() > 5);
    }
}
