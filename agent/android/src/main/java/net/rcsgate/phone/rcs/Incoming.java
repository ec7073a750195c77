package net.rcsgate.phone.rcs;

import java.io.File;
import java.io.IOException;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import java.util.Set;
import java.util.logging.Level;
import java.util.logging.Logger;
import net.rcsgate.phone.core.Event;
import net.rcsgate.phone.core.EventSink;
import net.rcsgate.phone.core.Ids;
import org.json.JSONException;
import org.json.JSONObject;

/**
 * Phone → Matrix through the messaging app's notifications. Each posted conversation notification
 * is parsed; every message not seen before becomes an event in the Inbox (fsync'd) and only then
 * joins the durable seen-set, so a re-post with the conversation's history, a listener reconnect,
 * an app restart or a reboot brings each message to Matrix once, in order. Copies the SMS path
 * already has, and the owner's messages that are replies sent from Matrix, are left out (Traffic).
 *
 * <p>While the SMS path runs, a message is held for SETTLE_MS after it first shows, so the SMS
 * broadcast of the same message (usually first, not always) can claim it. Not thread-safe by
 * design: the framework side calls it from one thread.
 */
public final class Incoming {
    /** How long a notification message waits for the SMS broadcast of the same SMS. */
    public static final long SETTLE_MS = 4000;
    /** Messages remembered as bridged (a few months of a busy phone). */
    static final int SEEN_MAX = 20000;
    /** The largest file copied out of a notification (the wire's limit). */
    static final long MAX_FILE = 100L << 20;

    /** The SMS path, as far as this side needs it. */
    public interface SmsSide {
        /** Whether the SMS path receives SMS now (permission granted). */
        boolean active();
    }

    /** Runs a task later (the framework's timer; tests run it by hand). */
    public interface Later {
        void at(long delayMs, Runnable r);
    }

    public interface Clock {
        long now();
    }

    private static final Logger LOG = Logger.getLogger("rcsgate.rcs");

    private final EventSink inbox;
    private final NotificationParser parser;
    private final KeyLog seen;
    private final Traffic traffic;
    private final Parties parties;
    private final Attachments attachments;
    private final File mediaDir;
    private final SmsSide sms;
    private final Later later;
    private final Clock clock;
    /** When this process first saw a message (for the settle wait). */
    private final LinkedHashMap<String, Long> firstSeen = new LinkedHashMap<String, Long>() {
        @Override
        protected boolean removeEldestEntry(Map.Entry<String, Long> e) {
            return size() > 5000;
        }
    };
    /** Conversations with a re-check scheduled, and the newest notification of each. */
    private final Map<String, Posted> waiting = new HashMap<>();
    private int lastErrors;

    public Incoming(File dir, EventSink inbox, Contacts contacts, Attachments attachments, SmsSide sms, Later later, Clock clock) throws IOException {
        this.inbox = inbox;
        this.parser = new NotificationParser(contacts);
        this.seen = new KeyLog(new File(dir, "rcs-seen.log"), SEEN_MAX, 0);
        this.traffic = new Traffic(new File(dir, "rcs-traffic.log"));
        this.parties = new Parties(new File(dir, "rcs-parties.json"));
        this.attachments = attachments == null ? Attachments.NONE : attachments;
        this.mediaDir = new File(dir, "rcs-media");
        this.sms = sms;
        this.later = later;
        this.clock = clock;
        if (!mediaDir.isDirectory() && !mediaDir.mkdirs()) throw new IOException("cannot make " + mediaDir);
    }

    /** Errors met since the start (a message not stored is tried again at the next post). */
    public synchronized int errors() {
        return lastErrors;
    }

    /**
     * A notification was posted (or found at a listener reconnect). Returns the conversation it
     * shows (null if none), whatever was stored now.
     */
    public synchronized Conversation posted(Posted p) {
        Conversation c;
        try {
            c = parser.parse(p);
        } catch (RuntimeException e) {
            // NotificationParser does not throw by design; a bug there must not stop the service.
            LOG.log(Level.WARNING, "a notification could not be read", e);
            lastErrors++;
            return null;
        }
        if (c == null) return null;
        process(p, c);
        return c;
    }

    private void process(Posted p, Conversation c) {
        long now = clock.now();
        boolean settle = sms.active();
        for (Conversation.Message m : c.messages) {
            if (seen.contains(m.id)) continue;
            Long first = firstSeen.get(m.id);
            if (first == null) {
                first = now;
                firstSeen.put(m.id, now);
            }
            if (settle && !m.fromMe && now - first < SETTLE_MS) {
                // Wait for the SMS broadcast; later messages wait behind this one (order).
                boolean scheduled = waiting.containsKey(c.key);
                waiting.put(c.key, p);
                if (!scheduled) later.at(first + SETTLE_MS - now, () -> recheck(c.key));
                return;
            }
            try {
                if (!store(c, m, now)) return;
                seen.add(m.id, now);
            } catch (IOException e) {
                LOG.log(Level.WARNING, "a notification message could not be stored; it is tried again at the next post", e);
                lastErrors++;
                return;
            }
        }
    }

    private synchronized void recheck(String key) {
        Posted p = waiting.remove(key);
        if (p != null) posted(p);
    }

    /** Stores what m needs in the Inbox; false to stop here (nothing lost: tried again later). */
    private boolean store(Conversation c, Conversation.Message m, long now) throws IOException {
        String number = c.group ? (m.from.startsWith("c:") ? null : m.from) : (c.chat.startsWith("c:") ? null : c.chat);
        if (m.fromMe) {
            if (traffic.isOwnReply(c.chat, m.text, now)) return true; // our own reply, back in the history
        } else if (sms.active() && m.dataUri == null && traffic.seenAsSms(number, m.text, now)) {
            return true; // the SMS path has it
        }
        if (c.group) {
            if (!m.fromMe) {
                Map<String, String> members = new LinkedHashMap<>();
                members.put(m.from, m.senderName);
                Parties.Group g = parties.group(c.chat, c.name, members);
                if (g != null) inbox.put(groupEvent(c.chat, g, m.from));
            } else if (!parties.knowsGroup(c.chat)) {
                Parties.Group g = parties.group(c.chat, c.name, new HashMap<String, String>());
                if (g != null) inbox.put(groupEvent(c.chat, g, ""));
            }
        } else if (!m.fromMe && !c.name.isEmpty() && Numbers.parse(c.name) == null && parties.name(c.chat, c.name)) {
            // The name the app shows for the partner (contact sync in the bridge decides whether it is shown).
            inbox.put(contactEvent(c.chat, c.name));
        }
        inbox.put(messageEvent(c, m));
        if (!m.fromMe) traffic.notified(number, m.text, now);
        return true;
    }

    private Event messageEvent(Conversation c, Conversation.Message m) throws IOException {
        String from = m.fromMe ? "" : m.from;
        Event ev;
        if (m.dataUri != null) {
            ev = mediaEvent(c, m, from);
        } else {
            ev = Event.text(m.id, c.chat, from, m.text, m.time, "", 0);
        }
        return m.fromMe ? ev.withFromMe() : ev;
    }

    /** The file as a media event if the app may read it, else a text saying what came. */
    private Event mediaEvent(Conversation c, Conversation.Message m, String from) {
        File dest = new File(mediaDir, m.id);
        try {
            Attachments.Copy copy = attachments.copy(m.dataUri, m.mime, dest, MAX_FILE);
            JSONObject o = Event.text(m.id, c.chat, from, caption(m), m.time, "", 0).json;
            o.put("kind", "media");
            JSONObject md = new JSONObject();
            md.put("name", copy.name == null || copy.name.isEmpty() ? "file" + extension(m.mime) : copy.name);
            md.put("mime", m.mime);
            md.put("size", copy.size);
            md.put("sha256", copy.sha256);
            o.put("media", md);
            o.put("file", copy.file.getAbsolutePath());
            o.put("give", true); // the copy is the agent's: moved into its store, not copied again
            return new Event(o);
        } catch (IOException | RuntimeException | JSONException e) {
            if (dest.exists() && !dest.delete()) LOG.fine("a partial copy was not removed");
            String what = what(m.mime);
            String cap = caption(m);
            String text = what + " arrived on the phone; rcsgate cannot read it from the notification. Open "
                    + appLabel(c.pkg) + " on the phone to see it." + (cap.isEmpty() ? "" : "\n" + cap);
            return Event.text(m.id, c.chat, from, text, m.time, "", 0);
        }
    }

    /** Apps put "Photo" or similar as the text of a file message; only a real caption is kept. */
    static String caption(Conversation.Message m) {
        String t = m.text.trim();
        String l = t.toLowerCase(Locale.ROOT);
        if (l.isEmpty() || l.equals("photo") || l.equals("image") || l.equals("picture") || l.equals("video")
                || l.equals("sticker") || l.equals("gif") || l.equals("audio") || l.equals("voice message")
                || l.equals("📷 photo") || l.equals("sent a photo") || l.equals("sent an image")) return "";
        return t;
    }

    static String what(String mime) {
        String m = mime == null ? "" : mime.toLowerCase(Locale.ROOT);
        if (m.startsWith("image/")) return "📷 A photo";
        if (m.startsWith("video/")) return "🎬 A video";
        if (m.startsWith("audio/")) return "🎤 A voice message or audio file";
        return "📎 A file";
    }

    static String extension(String mime) {
        switch (mime == null ? "" : mime.toLowerCase(Locale.ROOT)) {
            case "image/jpeg": return ".jpg";
            case "image/png": return ".png";
            case "image/gif": return ".gif";
            case "image/webp": return ".webp";
            case "video/mp4": return ".mp4";
            case "audio/mpeg": return ".mp3";
            case "audio/ogg": return ".ogg";
            default: return "";
        }
    }

    static String appLabel(String pkg) {
        MessagingApp a = MessagingApp.of(pkg);
        return a == null ? "the messaging app" : a.label;
    }

    static Event contactEvent(String chat, String name) {
        JSONObject o = new JSONObject();
        try {
            o.put("type", "event");
            o.put("id", Ids.hashed("ct-", chat, name));
            o.put("kind", "contact");
            o.put("chat", chat);
            o.put("from", chat);
            JSONObject ct = new JSONObject();
            ct.put("name", name);
            o.put("contact", ct);
        } catch (JSONException e) {
            throw new IllegalStateException(e);
        }
        return new Event(o);
    }

    static Event groupEvent(String chat, Parties.Group g, String from) {
        JSONObject o = new JSONObject();
        try {
            o.put("type", "event");
            List<String> parts = new ArrayList<>();
            parts.add(chat);
            parts.add(g.name);
            org.json.JSONArray members = new org.json.JSONArray();
            for (Map.Entry<String, String> e : g.members.entrySet()) {
                JSONObject mem = new JSONObject();
                mem.put("number", e.getKey());
                if (!e.getValue().isEmpty()) mem.put("name", e.getValue());
                members.put(mem);
                parts.add(e.getKey());
                parts.add(e.getValue());
            }
            o.put("id", Ids.hashed("grp-", parts.toArray(new String[0])));
            o.put("kind", "group");
            o.put("chat", chat);
            if (!from.isEmpty()) o.put("from", from);
            else o.put("from_me", true);
            JSONObject grp = new JSONObject();
            if (!g.name.isEmpty()) grp.put("name", g.name);
            grp.put("members", members);
            o.put("group", grp);
        } catch (JSONException e) {
            throw new IllegalStateException(e);
        }
        return new Event(o);
    }

    /** The SMS path stored an SMS (seen through the Inbox): remember it for the notification's copy. */
    public void smsStored(Event ev, long at) {
        if (ev.json.optBoolean("backfill") || !"sms".equals(ev.transport()) || !Event.KIND_TEXT.equals(ev.kind())) return;
        try {
            traffic.sms(ev.chat(), ev.text(), at);
        } catch (IOException e) {
            LOG.log(Level.WARNING, "SMS fingerprint not kept", e);
        }
    }

    /** Whether an SMS from number with this text came to Matrix through a notification already. */
    public boolean smsAlreadyBridged(String number, String text, long at) {
        return traffic.seenInNotification(number, text, at);
    }

    /** A reply went out to chat through the messaging app (it will show as the owner's message). */
    public void replied(String chat, String text, long at) {
        try {
            traffic.replied(chat, text, at);
        } catch (IOException e) {
            LOG.log(Level.WARNING, "reply fingerprint not kept", e);
        }
    }

    public boolean knowsGroup(String chat) {
        return parties.knowsGroup(chat);
    }

    /** Removes copied files no waiting event needs any more (the agent copied them at its ack). */
    public synchronized int cleanMedia(Set<String> stillNeeded) {
        File[] files = mediaDir.listFiles();
        if (files == null) return 0;
        Set<String> keep = new HashSet<>(stillNeeded);
        int n = 0;
        for (File f : files) {
            if (!keep.contains(f.getAbsolutePath()) && f.delete()) n++;
        }
        return n;
    }
}
