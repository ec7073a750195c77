package net.rcsgate.phone.core;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;

import java.io.File;
import java.io.FileOutputStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.util.ArrayList;
import java.util.List;
import org.junit.Rule;
import org.junit.Test;
import org.junit.rules.TemporaryFolder;

public class InboxTest {
    @Rule public TemporaryFolder tmp = new TemporaryFolder();

    static Event sms(String id, String text) {
        return Event.text(id, "+12025550123", "+12025550123", text, 1767225600999L, "sms", 1);
    }

    @Test
    public void keepsEventsUntilAckedAcrossReopen() throws Exception {
        File f = new File(tmp.getRoot(), "inbox.log");
        Inbox in = new Inbox(f);
        List<String> put = new ArrayList<>();
        in.addListener(ev -> put.add(ev.id()));
        in.put(sms("sms-1", "one"));
        in.put(sms("sms-2", "two"));
        in.put(sms("sms-1", "one again")); // same id: stored once
        assertEquals(2, in.size());
        assertEquals(2, put.size());
        in.ack("sms-1");
        in.close();

        Inbox again = new Inbox(f); // as after a process death
        assertEquals(1, again.size());
        assertEquals("sms-2", again.waiting().get(0).id());
        assertEquals("two", again.waiting().get(0).text());
        again.put(sms("sms-1", "one")); // acked recently: not stored again
        assertEquals(1, again.size());
    }

    @Test
    public void dropsATornTailAndDamagedLines() throws Exception {
        File f = new File(tmp.getRoot(), "inbox.log");
        Inbox in = new Inbox(f);
        in.put(sms("sms-1", "kept"));
        in.close();
        try (FileOutputStream o = new FileOutputStream(f, true)) {
            o.write("garbage line\n+{not json\n+{\"type\":\"event\",\"id\":\"sms-3\",\"te".getBytes(StandardCharsets.UTF_8));
        }
        Inbox again = new Inbox(f);
        assertEquals(1, again.size());
        assertEquals(3, again.skipped());
        again.put(sms("sms-4", "after the repair"));
        again.close();
        assertEquals(2, new Inbox(f).size());
    }

    @Test
    public void compactsWhenMostlyAcked() throws Exception {
        File f = new File(tmp.getRoot(), "inbox.log");
        Inbox in = new Inbox(f);
        in.compactAfter = 50;
        for (int i = 0; i < 150; i++) {
            in.put(sms("sms-" + i, "m" + i));
            if (i != 70) in.ack("sms-" + i);
        }
        long lines = Files.readAllLines(f.toPath()).size();
        assertTrue("file not compacted: " + lines + " lines", lines < 300);
        in.close();
        Inbox again = new Inbox(f);
        assertEquals(1, again.size());
        assertEquals("sms-70", again.waiting().get(0).id());
        again.put(sms("sms-149", "acked before compaction")); // still remembered
        assertEquals(1, again.size());
    }

    @Test
    public void clearDropsEverything() throws Exception {
        Inbox in = new Inbox(new File(tmp.getRoot(), "inbox.log"));
        in.put(sms("sms-1", "a"));
        in.put(sms("sms-2", "b"));
        assertEquals(2, in.clear());
        assertEquals(0, in.size());
    }

    @Test(expected = java.io.IOException.class)
    public void refusesAnInvalidId() throws Exception {
        new Inbox(new File(tmp.getRoot(), "inbox.log")).put(sms("bad id!", "x"));
    }
}
