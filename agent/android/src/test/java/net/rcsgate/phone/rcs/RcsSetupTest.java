package net.rcsgate.phone.rcs;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertTrue;

import java.util.ArrayList;
import java.util.List;
import net.rcsgate.phone.core.SetupChecks;
import net.rcsgate.phone.core.SetupChecks.Check;
import net.rcsgate.phone.core.SetupChecks.Step;
import org.junit.Test;

public class RcsSetupTest {
    static final class Phone implements RcsSetup.Phone {
        int sdk = 34;
        String def = MessagingApp.GOOGLE;
        boolean na, ax, ct;

        @Override public int sdk() { return sdk; }
        @Override public String defaultSmsApp() { return def; }
        @Override public String label(String pkg) { return "Textra"; }
        @Override public boolean notificationAccess() { return na; }
        @Override public boolean accessibility() { return ax; }
        @Override public boolean contacts() { return ct; }
    }

    static List<Step> steps(List<Check> cs) {
        List<Step> out = new ArrayList<>();
        for (Check c : cs) out.add(c.step);
        return out;
    }

    @Test
    public void android13AndLaterExplainRestrictedSettings() {
        Phone p = new Phone();
        List<Check> cs = RcsSetup.run(p);
        assertTrue(steps(cs).contains(Step.RESTRICTED_SETTINGS));
        Check na = cs.get(1);
        assertEquals(Step.NOTIFICATION_ACCESS, na.step);
        assertFalse(na.ok);
        assertTrue(na.detail, na.detail.contains("Allow restricted settings"));
        Check restricted = cs.get(steps(cs).indexOf(Step.RESTRICTED_SETTINGS));
        assertTrue(restricted.detail, restricted.detail.contains("⋮") && restricted.detail.contains("App info"));
        p.na = p.ax = true;
        assertFalse("both granted: no restricted-settings step", steps(RcsSetup.run(p)).contains(Step.RESTRICTED_SETTINGS));
        p.sdk = 32;
        p.na = false;
        List<Check> old = RcsSetup.run(p);
        assertFalse(steps(old).contains(Step.RESTRICTED_SETTINGS));
        assertFalse(old.get(1).detail.contains("restricted"));
    }

    @Test
    public void theMessagingAppStep() {
        Phone p = new Phone();
        Check ok = RcsSetup.run(p).get(0);
        assertTrue(ok.ok);
        assertEquals("Messaging app for RCS: Google Messages", ok.title);
        p.def = "com.textra";
        Check other = RcsSetup.run(p).get(0);
        assertFalse(other.ok);
        assertTrue(other.detail, other.detail.startsWith("The default SMS app is Textra."));
        p.def = null;
        assertTrue(RcsSetup.run(p).get(0).detail.startsWith("No default SMS app is set."));
    }

    @Test
    public void stepsGoAfterTheSmsStep() {
        List<Check> base = new ArrayList<>();
        base.add(new Check(Step.SMS, true, "SMS", ""));
        base.add(new Check(Step.PAIRED, false, "Paired", ""));
        List<Check> all = RcsSetup.merge(base, RcsSetup.run(new Phone()));
        assertEquals(Step.SMS, all.get(0).step);
        assertEquals(Step.MESSAGING_APP, all.get(1).step);
        assertEquals(Step.PAIRED, all.get(all.size() - 1).step);
        assertEquals(Step.NOTIFICATION_ACCESS, SetupChecks.next(all).step);
    }
}
