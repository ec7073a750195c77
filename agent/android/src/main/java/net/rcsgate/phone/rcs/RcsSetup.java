package net.rcsgate.phone.rcs;

import java.util.ArrayList;
import java.util.List;
import net.rcsgate.phone.core.SetupChecks;
import net.rcsgate.phone.core.SetupChecks.Check;
import net.rcsgate.phone.core.SetupChecks.Step;

/**
 * The setup screen's steps for RCS through the messaging app, each with a live check and words
 * for a person. Plain Java over a Phone interface, tested on the JVM like SetupChecks.
 */
public final class RcsSetup {
    /** What the platform says right now. */
    public interface Phone {
        /** Android's API level (Build.VERSION.SDK_INT). */
        int sdk();

        /** The default SMS app's package, or null. */
        String defaultSmsApp();

        /** A label for a package ("Textra"), or the package name. */
        String label(String pkg);

        boolean notificationAccess();

        boolean accessibility();

        boolean contacts();
    }

    /** Android 13 greys out these switches for apps installed from a file until the person allows it. */
    static final String RESTRICTED = "If the switch is greyed out (\"Restricted setting\"), Android 13 and later need one more step first: see \"Allow restricted settings\" below.";

    private RcsSetup() {}

    public static List<Check> run(Phone p) {
        List<Check> out = new ArrayList<>();
        String def = p.defaultSmsApp();
        MessagingApp app = MessagingApp.of(def);
        if (app != null) {
            out.add(new Check(Step.MESSAGING_APP, true, "Messaging app for RCS: " + app.label, ""));
        } else {
            out.add(new Check(Step.MESSAGING_APP, false, "Messaging app for RCS",
                    (def == null ? "No default SMS app is set. " : "The default SMS app is " + p.label(def) + ". ")
                            + "RCS chats reach Matrix only through Google Messages or Samsung Messages as the default SMS app, with chat features (RCS) on. Tap to choose it."));
        }
        boolean restricted = p.sdk() >= 33;
        boolean na = p.notificationAccess();
        out.add(new Check(Step.NOTIFICATION_ACCESS, na, "Read the messaging app's notifications (RCS to Matrix)",
                na ? "" : "Tap, then turn on rcsgate. Your RCS messages reach Matrix as the messaging app shows them, and Matrix replies go back through them. "
                        + "rcsgate reads only Google Messages' and Samsung Messages' notifications." + (restricted ? " " + RESTRICTED : "")));
        boolean ax = p.accessibility();
        out.add(new Check(Step.ACCESSIBILITY, ax, "Press Send in the messaging app (optional: new RCS chats)",
                ax ? "" : "Tap, then turn on rcsgate (under Downloaded or Installed apps). Matrix can then start new chats, and answer after a reboot, by opening the messaging app "
                        + "and pressing Send for you — only while the phone is unlocked; it reads only the messaging app's screen. Without it, such messages go as SMS."
                        + (restricted ? " " + RESTRICTED : "")));
        if (restricted && (!na || !ax)) {
            out.add(new Check(Step.RESTRICTED_SETTINGS, false, "Allow restricted settings (Android 13 and later)",
                    "Only if a switch above is greyed out: tap to open rcsgate's App info, tap ⋮ at the top right, choose \"Allow restricted settings\" and confirm; then come back and turn the switches on."));
        }
        boolean ct = p.contacts();
        out.add(new Check(Step.CONTACTS, ct, "Match names to numbers (optional: contacts)",
                ct ? "" : "Tap to allow. Notifications often show only a name; with your contacts rcsgate finds the number, so the chat in Matrix is the same one your SMS with that person go to. Without it such chats are known by name only."));
        return out;
    }

    /** Where the steps go among SetupChecks' (after the SMS step). */
    public static List<Check> merge(List<Check> base, List<Check> rcs) {
        List<Check> out = new ArrayList<>(base);
        int at = 0;
        while (at < out.size() && out.get(at).step == SetupChecks.Step.SMS) at++;
        out.addAll(at, rcs);
        return out;
    }
}
