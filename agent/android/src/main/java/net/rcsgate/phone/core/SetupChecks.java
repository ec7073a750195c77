package net.rcsgate.phone.core;

import java.text.DateFormat;
import java.util.ArrayList;
import java.util.List;

/**
 * The setup screen's steps, each with a live check and what to do when it fails, in words for a
 * person. Plain Java over a Phone interface, so the order and wording are tested on the JVM.
 */
public final class SetupChecks {
    public enum Step {
        SMS, NOTIFICATIONS, BATTERY, PAIRED, CONNECTED,
        // RCS through the messaging app (net.rcsgate.phone.rcs.RcsSetup)
        MESSAGING_APP, NOTIFICATION_ACCESS, ACCESSIBILITY, RESTRICTED_SETTINGS, CONTACTS
    }

    /** What the platform and the agent say right now. */
    public interface Phone {
        boolean smsPermissions();

        boolean notificationsAllowed();

        boolean batteryExempt();

        boolean paired();

        AgentRunner.State runner();

        AgentStatus status();
    }

    public static final class Check {
        public final Step step;
        public final boolean ok;
        public final String title;
        public final String detail;

        public Check(Step step, boolean ok, String title, String detail) {
            this.step = step;
            this.ok = ok;
            this.title = title;
            this.detail = detail;
        }

        @Override
        public String toString() {
            return (ok ? "[ok] " : "[  ] ") + title + (detail.isEmpty() ? "" : " — " + detail);
        }
    }

    private SetupChecks() {}

    public static List<Check> run(Phone p, DateFormat time) {
        List<Check> out = new ArrayList<>();
        out.add(new Check(Step.SMS, p.smsPermissions(), "Send and receive SMS",
                p.smsPermissions() ? "" : "Tap to allow: the app sends the texts you write in Matrix and passes on the ones you receive. It reads recent texts once, to show your conversations."));
        out.add(new Check(Step.NOTIFICATIONS, p.notificationsAllowed(), "Notifications",
                p.notificationsAllowed() ? "" : "Tap to allow: Android only keeps the app running with a visible notification, and it tells you when something needs you."));
        out.add(new Check(Step.BATTERY, p.batteryExempt(), "Battery optimisation off",
                p.batteryExempt() ? "" : "Tap and choose \"Allow\": otherwise Android stops the app when the screen is off and your messages wait."));
        boolean paired = p.paired();
        AgentStatus s = p.status();
        if (paired && s.unpaired) {
            out.add(new Check(Step.PAIRED, false, "Paired with your server",
                    "The server no longer knows this phone (it was removed there). Pair it again with a new link."));
        } else {
            out.add(new Check(Step.PAIRED, paired, "Paired with your server",
                    paired ? "" : "Scan the QR code from `rcsgate pair` (or the bot's `login`) with the camera, or paste the link below."));
        }
        boolean connected = paired && s.connected && p.runner() == AgentRunner.State.RUNNING;
        String detail;
        if (!paired) {
            detail = "After pairing.";
        } else if (p.runner() == AgentRunner.State.STOPPED) {
            detail = "The service is stopped. Tap to start it.";
        } else {
            detail = s.describe(time);
        }
        out.add(new Check(Step.CONNECTED, connected, "Connected", detail));
        return out;
    }

    /** The first step that needs the person, or null when everything is done. */
    public static Check next(List<Check> checks) {
        for (Check c : checks) if (!c.ok) return c;
        return null;
    }
}
