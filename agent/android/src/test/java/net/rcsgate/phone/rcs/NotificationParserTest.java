package net.rcsgate.phone.rcs;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertNotEquals;
import static org.junit.Assert.assertNotNull;
import static org.junit.Assert.assertNull;
import static org.junit.Assert.assertTrue;

import java.util.HashSet;
import java.util.Set;
import net.rcsgate.phone.core.Ids;
import net.rcsgate.phone.it.Fixtures;
import org.junit.Test;

/** The apps' notifications (src/fixtures) read into conversations. */
public class NotificationParserTest {
    static final NotificationParser PLAIN = new NotificationParser(Contacts.NONE);

    static Conversation parse(String fixture) throws Exception {
        return PLAIN.parse(Fixtures.posted(fixture, null));
    }

    @Test
    public void googleOneToOneByNameOnly() throws Exception {
        Conversation c = parse("google-1to1");
        assertNotNull(c);
        assertFalse(c.group);
        assertTrue("no number known: a conversation key, " + c.chat, c.chat.matches("c:[0-9a-f]{32}"));
        assertEquals("Ann Example", c.name);
        assertEquals(2, c.messages.size());
        Conversation.Message m = c.messages.get(1);
        assertEquals("Are you coming tonight?", m.text);
        assertEquals(1767225605000L, m.time);
        assertEquals(c.chat, m.from);
        assertFalse(m.fromMe);
        assertTrue(Ids.valid(m.id));
        assertTrue(m.id.startsWith("rcs-"));
    }

    @Test
    public void aRepostKeepsIdsAndChat() throws Exception {
        Conversation first = parse("google-1to1");
        Conversation again = parse("google-1to1-update");
        assertEquals(first.chat, again.chat);
        assertEquals(4, again.messages.size());
        assertEquals(first.messages.get(0).id, again.messages.get(0).id);
        assertEquals(first.messages.get(1).id, again.messages.get(1).id);
        Conversation.Message mine = again.messages.get(2);
        assertTrue("a message without sender is the owner's", mine.fromMe);
        assertEquals("", mine.from);
        assertEquals("Yes, with Bob", mine.text);
    }

    @Test
    public void unknownSenderIsAChatByNumber() throws Exception {
        Conversation c = parse("google-unknown-number");
        assertEquals("+12025550143", c.chat);
        assertEquals("+12025550143", c.messages.get(0).from);
    }

    @Test
    public void groupMembersByNameAndNumber() throws Exception {
        Conversation c = parse("google-group");
        assertTrue(c.group);
        assertTrue(c.chat, c.chat.matches("g:[0-9a-f]{32}"));
        assertEquals("Family", c.name);
        assertEquals(3, c.messages.size());
        String ann = c.messages.get(0).from;
        String bob = c.messages.get(1).from;
        assertTrue(ann, ann.matches("c:[0-9a-f]{32}"));
        assertNotEquals("each member is a party of its own", ann, bob);
        assertEquals("+442079460018", c.messages.get(2).from);
        assertEquals("Bob Example", c.messages.get(1).senderName);
        // The member key depends on the conversation: Ann in the group is not Ann's 1:1 chat.
        assertNotEquals(parse("google-1to1").chat, ann);
    }

    @Test
    public void samsungGroupWithoutTheFlag() throws Exception {
        Conversation c = parse("samsung-group");
        assertTrue("a conversation title and several senders make a group", c.group);
        assertEquals("Book club", c.name);
        assertEquals("+12025550177", c.messages.get(0).from); // tel: URI
    }

    @Test
    public void legacySenderWithoutPersonAndContactsLookup() throws Exception {
        Conversation plain = parse("samsung-1to1");
        assertTrue(plain.chat.startsWith("c:"));
        assertEquals("On my way", plain.messages.get(0).text);
        assertFalse("a legacy sender name is someone else, not the owner", plain.messages.get(0).fromMe);
        // With the contacts, the lookup URI gives the number.
        final String[] asked = new String[2];
        NotificationParser withContacts = new NotificationParser((uri, name) -> {
            asked[0] = uri;
            asked[1] = name;
            return "(202) 555-0188";
        });
        Conversation c = withContacts.parse(Fixtures.posted("samsung-1to1", null));
        assertEquals("2025550188", c.chat);
        assertEquals("content://com.android.contacts/contacts/lookup/0r7-2C3A/7", asked[0]);
        assertEquals("Carol Example", asked[1]);
    }

    @Test
    public void imagesKeepTheirUri() throws Exception {
        Conversation c = parse("google-image");
        assertEquals(2, c.messages.size());
        assertEquals("image/jpeg", c.messages.get(0).mime);
        assertTrue(c.messages.get(0).dataUri.startsWith("content://"));
        assertNotEquals(c.messages.get(0).id, c.messages.get(1).id);
    }

    @Test
    public void summariesAndOtherAppsAreNoConversation() throws Exception {
        assertNull(parse("google-summary"));
        Posted other = Fixtures.posted("google-1to1", null);
        other.pkg = "com.whatsapp";
        assertNull(PLAIN.parse(other));
        assertNull(PLAIN.parse(new Posted()));
        assertNull(PLAIN.parse(null));
    }

    @Test
    public void notMessagingStyleFallsBackToTitleAndText() throws Exception {
        Posted p = new Posted();
        p.pkg = MessagingApp.SAMSUNG;
        p.key = "k";
        p.postTime = 5;
        p.title = "+1 (202) 555-0199";
        p.text = "plain notification";
        Conversation c = PLAIN.parse(p);
        assertEquals("+12025550199", c.chat);
        assertEquals(1, c.messages.size());
        assertEquals("plain notification", c.messages.get(0).text);
        assertEquals(5, c.messages.get(0).time);
    }

    @Test
    public void oversizedInputIsCut() throws Exception {
        Posted p = Fixtures.posted("google-1to1", null);
        StringBuilder big = new StringBuilder();
        for (int i = 0; i < 100000; i++) big.append("é");
        p.messages.get(0).text = big.toString();
        p.title = big.toString();
        for (int i = 0; i < 300; i++) p.messages.add(new Posted.Msg("m" + i, 1767225700000L + i, "Ann Example"));
        Conversation c = PLAIN.parse(p);
        assertEquals(NotificationParser.MAX_MESSAGES, c.messages.size());
        assertEquals("m299", c.messages.get(c.messages.size() - 1).text);
        assertTrue(c.name.getBytes("UTF-8").length <= NotificationParser.MAX_NAME_BYTES);
        String cut = NotificationParser.clean(big.toString(), NotificationParser.MAX_TEXT_BYTES);
        assertTrue(cut.getBytes("UTF-8").length <= NotificationParser.MAX_TEXT_BYTES);
        assertTrue(cut.endsWith("[…]"));
        assertEquals("exactly at the limit: kept whole", "abc", NotificationParser.clean("abc", 3));
    }

    @Test
    public void numbersAsAppsWriteThem() {
        assertEquals("+12025550100", Numbers.parse("+1 (202) 555-0100"));
        assertEquals("2025550100", Numbers.parse("202.555.0100"));
        assertEquals("12345", Numbers.parse("12345"));
        assertNull(Numbers.parse("Mom"));
        assertNull(Numbers.parse("2023 trip"));
        assertNull(Numbers.parse("12"));
        assertNull(Numbers.parse("+1 2+3"));
        assertEquals("+12025550100", Numbers.fromUri("tel:+1-202-555-0100"));
        assertEquals("+12025550100", Numbers.fromUri("tel:%2B12025550100;ext=1"));
        assertNull(Numbers.fromUri("mailto:a@example.org"));
        assertTrue(Numbers.same("+12025550100", "(202) 555-0100"));
        assertFalse(Numbers.same("+12025550100", "+12025550101"));
        assertFalse(Numbers.same("12345", "2345"));
    }

    @Test
    public void everyFixtureParsesToValidWireValues() throws Exception {
        Set<String> ids = new HashSet<>();
        for (String name : Fixtures.names()) {
            Conversation c = parse(name);
            if (c == null) continue;
            assertTrue(name + ": chat " + c.chat, FuzzParserTest.validParty(c.chat));
            for (Conversation.Message m : c.messages) {
                assertTrue(name + ": id " + m.id, Ids.valid(m.id));
                assertTrue(name + ": from " + m.from, m.fromMe ? m.from.isEmpty() : FuzzParserTest.validParty(m.from));
                if (!name.equals("google-1to1-update")) assertTrue(name + ": ids are unique", ids.add(m.id)); // the update repeats google-1to1's
            }
        }
    }
}
