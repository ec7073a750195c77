package net.rcsgate.phone.core;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertNull;
import static org.junit.Assert.assertTrue;

import java.text.DateFormat;
import java.text.SimpleDateFormat;
import java.util.List;
import java.util.TimeZone;
import org.junit.Test;

public class SetupChecksTest {
    static final class Phone implements SetupChecks.Phone {
        boolean sms, notify, battery, paired;
        AgentRunner.State runner = AgentRunner.State.STOPPED;
        AgentStatus status = AgentStatus.UNKNOWN;

        @Override public boolean smsPermissions() { return sms; }
        @Override public boolean notificationsAllowed() { return notify; }
        @Override public boolean batteryExempt() { return battery; }
        @Override public boolean paired() { return paired; }
        @Override public AgentRunner.State runner() { return runner; }
        @Override public AgentStatus status() { return status; }
    }

    static DateFormat utc() {
        SimpleDateFormat f = new SimpleDateFormat("HH:mm");
        f.setTimeZone(TimeZone.getTimeZone("UTC"));
        return f;
    }

    @Test
    public void stepsInOrderWithWhatToDo() {
        Phone p = new Phone();
        List<SetupChecks.Check> c = SetupChecks.run(p, utc());
        assertEquals(5, c.size());
        assertEquals(SetupChecks.Step.SMS, SetupChecks.next(c).step);
        assertTrue(c.get(0).detail.contains("Tap to allow"));
        assertEquals("After pairing.", c.get(4).detail);

        p.sms = p.notify = p.battery = true;
        assertEquals(SetupChecks.Step.PAIRED, SetupChecks.next(SetupChecks.run(p, utc())).step);

        p.paired = true;
        p.runner = AgentRunner.State.RUNNING;
        p.status = new AgentStatus(false, 1767225600000L, 3, 0, "server.example:443: timeout", false);
        c = SetupChecks.run(p, utc());
        assertEquals(SetupChecks.Step.CONNECTED, SetupChecks.next(c).step);
        assertEquals("Not connected since 00:00. Last error: server.example:443: timeout 3 messages wait to go to the server.", c.get(4).detail);

        p.status = new AgentStatus(true, 1767225600000L, 0, 1, "", false);
        c = SetupChecks.run(p, utc());
        assertNull(SetupChecks.next(c));
        assertEquals("Connected since 00:00. 1 message waits to be sent by this phone.", c.get(4).detail);

        p.status = new AgentStatus(false, 0, 0, 0, "revoked", true);
        c = SetupChecks.run(p, utc());
        assertFalse(c.get(3).ok);
        assertTrue(c.get(3).detail.contains("Pair it again"));
    }
}
