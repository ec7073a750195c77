package net.rcsgate.phone.core;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import java.util.Arrays;
import org.junit.Test;

public class PairLinkTest {
    static final String PIN = "n4bQgYhMfWWaL-qgxVrQFaO_TxsrC4Is0V1sFbDwCgg";
    static final String TOKEN = "0123456789abcdef0123";

    @Test
    public void parsesAValidLink() throws Exception {
        PairLink l = PairLink.parse("  rcsgate://pair?addr=gw.example.org%3A8443&addr=%5B2001%3Adb8%3A%3A1%5D%3A8443&token=" + TOKEN + "&pin=" + PIN + "&future=1\n");
        assertEquals(Arrays.asList("gw.example.org:8443", "[2001:db8::1]:8443"), l.addrs);
        assertEquals(TOKEN, l.token);
        assertEquals("gw.example.org:8443", l.server());
        assertTrue(l.text.startsWith("rcsgate://pair?"));
    }

    @Test
    public void refusesBrokenLinksWithAReason() {
        String ok = "addr=h:1&token=" + TOKEN + "&pin=" + PIN;
        String[][] cases = {
            {"", "No pairing link"},
            {"https://example.org/pair?" + ok, "must start with rcsgate://pair?"},
            {"rcsgate://pair?token=" + TOKEN + "&pin=" + PIN, "no server address"},
            {"rcsgate://pair?addr=h&token=" + TOKEN + "&pin=" + PIN, "is not HOST:PORT"},
            {"rcsgate://pair?addr=h:0&token=" + TOKEN + "&pin=" + PIN, "bad port"},
            {"rcsgate://pair?addr=h:70000&token=" + TOKEN + "&pin=" + PIN, "bad port"},
            {"rcsgate://pair?addr=2001:db8::1:53&token=" + TOKEN + "&pin=" + PIN, "is not HOST:PORT"},
            {"rcsgate://pair?addr=h:1&token=short&pin=" + PIN, "token"},
            {"rcsgate://pair?addr=h:1&token=" + TOKEN, "pin"},
            {"rcsgate://pair?addr=h:1&token=" + TOKEN + "&pin=" + PIN.substring(3), "pin"},
            {"rcsgate://pair?addr=h:1&token=" + TOKEN + "&pin=" + PIN + "=", "pin"},
            {"rcsgate://pair?addr=%zz&token=" + TOKEN + "&pin=" + PIN, "damaged"},
            {"rcsgate://pair?" + ok + "&x=" + new String(new char[2100]).replace('\0', 'a'), "too long"},
        };
        for (String[] c : cases) {
            try {
                PairLink.parse(c[0]);
                fail("accepted " + c[0]);
            } catch (PairLink.Invalid e) {
                assertTrue(e.getMessage() + " should mention " + c[1], e.getMessage().contains(c[1]));
            }
        }
    }
}
