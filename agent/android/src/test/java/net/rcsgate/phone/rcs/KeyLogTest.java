package net.rcsgate.phone.rcs;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertTrue;

import java.io.File;
import java.nio.file.Files;
import org.junit.Test;

public class KeyLogTest {
    @Test
    public void durableBoundedAndExpiring() throws Exception {
        File f = new File(Files.createTempDirectory("keylog").toFile(), "k.log");
        KeyLog k = new KeyLog(f, 100, 1000);
        for (int i = 0; i < 450; i++) k.add("key" + i, 10000 + i);
        assertEquals(100, k.size());
        assertFalse(k.contains("key0"));
        assertTrue(k.contains("key449"));
        assertTrue("rewritten when long", f.length() < 450 * 12);
        k.close();
        KeyLog again = new KeyLog(f, 100, 1000);
        assertEquals(100, again.size());
        assertTrue(again.contains("key400"));
        again.add("late", 20000); // everything else is now older than the ttl
        assertEquals(1, again.size());
        assertEquals(1, again.since(0).size());
    }
}
