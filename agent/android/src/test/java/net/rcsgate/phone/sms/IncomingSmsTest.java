package net.rcsgate.phone.sms;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertNull;
import static org.junit.Assert.assertTrue;

import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import net.rcsgate.phone.core.Event;
import net.rcsgate.phone.core.Ids;
import org.junit.Test;

public class IncomingSmsTest {
    static final List<SmsPlatform.Sim> SIMS = Arrays.asList(new SmsPlatform.Sim(1, 11), new SmsPlatform.Sim(2, 12));

    @Test
    public void broadcastAndProviderGiveTheSameId() {
        Event b = IncomingSms.events(new IncomingSms.Received("+12025550123", "hi there", 1767225600000L, 1767225601000L, 12), SIMS).get(0);
        Event p = IncomingSms.fromProvider(1, "+12025550123", "hi there", 1767225601000L, 1767225600000L, 12, SIMS);
        assertEquals(b.id(), p.id());
        assertTrue(Ids.valid(b.id()));
        assertEquals(2, b.sim());
        assertEquals("sms", b.transport());
        assertEquals(1767225600000L, b.ts());
        assertTrue(p.backfill());
        assertTrue(!b.backfill());
        Event other = IncomingSms.events(new IncomingSms.Received("+12025550123", "hi there!", 1767225600000L, 0, 12), SIMS).get(0);
        assertTrue(!other.id().equals(b.id()));
    }

    @Test
    public void oddInputLosesNothing() {
        Event empty = IncomingSms.events(new IncomingSms.Received("+12025550123", "", 1, 2, 11), SIMS).get(0);
        assertEquals("[empty SMS]", empty.text());
        Event unknownSim = IncomingSms.events(new IncomingSms.Received("+12025550123", "x", 1, 2, 99), SIMS).get(0);
        assertEquals(0, unknownSim.sim());
        Event noSender = IncomingSms.events(new IncomingSms.Received(null, "x", 0, 5, -1), SIMS).get(0);
        assertEquals("unknown", noSender.chat());
        assertEquals(5, noSender.ts());
        Event alpha = IncomingSms.events(new IncomingSms.Received("MyBank", "code 1234", 1, 2, 11), SIMS).get(0);
        assertEquals("MyBank", alpha.chat());

        // A huge multipart text (255 parts of 67 four-byte characters) is split, never cut.
        StringBuilder sb = new StringBuilder();
        for (int i = 0; i < 255 * 67; i++) sb.appendCodePoint(0x1F600 + (i % 50));
        String huge = sb.toString();
        List<Event> parts = IncomingSms.events(new IncomingSms.Received("+12025550123", huge, 1, 2, 11), SIMS);
        assertTrue(parts.size() > 1);
        StringBuilder joined = new StringBuilder();
        List<String> ids = new ArrayList<>();
        for (Event e : parts) {
            assertTrue(e.text().getBytes(StandardCharsets.UTF_8).length <= IncomingSms.MAX_TEXT_BYTES);
            joined.append(e.text());
            ids.add(e.id());
            assertTrue(Ids.valid(e.id()));
        }
        assertEquals(huge, joined.toString());
        assertTrue(ids.get(0).endsWith(".1"));
    }

    @Test
    public void providerRows() {
        Event sent = IncomingSms.fromProvider(2, "+12025550123", "from me", 1767225600000L, 0, 11, SIMS);
        assertTrue(sent.json.optBoolean("from_me"));
        assertTrue(sent.backfill());
        assertEquals(1, sent.sim());
        assertTrue(sent.id().startsWith("smsout-"));
        assertNull("drafts and others are not history", IncomingSms.fromProvider(3, "+12025550123", "draft", 1, 0, 11, SIMS));
        assertNull(IncomingSms.fromProvider(2, "", "x", 1, 0, 11, SIMS));
    }
}
