package net.rcsgate.phone.rcs;

import java.io.File;
import java.io.IOException;
import java.util.Map;
import net.rcsgate.phone.core.Ids;

/**
 * Recent traffic that two routes can both see, to keep each message single in Matrix:
 * <ul>
 *   <li>an SMS reaches the app twice when both paths run: as the SMS_RECEIVED broadcast (the SMS
 *       path) and in the messaging app's notification. The SMS path keeps it (it knows the number
 *       and that it is SMS); the notification's copy is dropped.
 *   <li>a reply sent from Matrix comes back in the conversation's re-posted notification as the
 *       owner's own message; it is dropped rather than bridged back.
 * </ul>
 * Fingerprints (who, a hash of the text, when it was seen here) are kept on disk for a while, so
 * a restart between the two sightings changes nothing. Matching uses the time each copy reached
 * this phone, not the network's timestamps (an SMS centre's clock can be far off).
 */
final class Traffic {
    /** Two sightings of one SMS are at most this far apart. */
    static final long SAME_MESSAGE_MS = 2 * 60 * 1000;
    /** A reply from Matrix shows up again in the notification within this time. */
    static final long REPLY_ECHO_MS = 24L * 3600 * 1000;

    private final KeyLog log;

    Traffic(File file) throws IOException {
        log = new KeyLog(file, 2000, REPLY_ECHO_MS);
    }

    /** The SMS path stored an SMS from number. */
    void sms(String number, String text, long at) throws IOException {
        log.add("s|" + Numbers.digits(number) + "|" + hash(text) + "|" + at, at);
    }

    /** A notification's message went to Matrix; number is null when only a name is known. */
    void notified(String number, String text, long at) throws IOException {
        log.add("n|" + Numbers.digits(number) + "|" + hash(text) + "|" + at, at);
    }

    /** A reply went out to chat through the messaging app. */
    void replied(String chat, String text, long at) throws IOException {
        log.add("r|" + hash(chat) + "|" + hash(text) + "|" + at, at);
    }

    /**
     * Whether the SMS path stored this message already: same text, seen within SAME_MESSAGE_MS,
     * and the same number (when the notification knows one; by name only, text and time decide).
     */
    boolean seenAsSms(String number, String text, long at) {
        return match("s|", number, text, at, SAME_MESSAGE_MS);
    }

    /** Whether a notification already brought this SMS to Matrix (the broadcast came late). */
    boolean seenInNotification(String number, String text, long at) {
        return match("n|", number, text, at, SAME_MESSAGE_MS);
    }

    /** Whether the owner's message in chat is a reply this app sent, not one typed on the phone. */
    boolean isOwnReply(String chat, String text, long at) {
        String want = "r|" + hash(chat) + "|" + hash(text) + "|";
        for (Map.Entry<String, Long> e : log.since(at - REPLY_ECHO_MS)) if (e.getKey().startsWith(want)) return true;
        return false;
    }

    private boolean match(String kind, String number, String text, long at, long window) {
        String h = hash(text);
        for (Map.Entry<String, Long> e : log.since(at - window)) {
            String k = e.getKey();
            if (!k.startsWith(kind) || Math.abs(e.getValue() - at) > window) continue;
            String[] f = k.split("\\|", 4);
            if (f.length != 4 || !f[2].equals(h)) continue;
            if (f[1].isEmpty() || number == null || number.isEmpty() || Numbers.same(f[1], number)) return true;
        }
        return false;
    }

    static String hash(String s) {
        return Ids.hashed("", s);
    }
}
