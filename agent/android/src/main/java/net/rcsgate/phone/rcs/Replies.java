package net.rcsgate.phone.rcs;

import java.util.HashMap;
import java.util.HashSet;
import java.util.Map;
import java.util.Set;

/**
 * The reply and mark-as-read actions of the conversations whose notification is showing, by
 * chat. Only in memory (a PendingIntent does not survive the process, and an app may cancel it at
 * any time): an entry lives while its notification does.
 */
public final class Replies {
    /** What one live notification offers for its conversation. */
    public static final class Entry {
        public final String chat;
        public final String pkg;
        public final String notificationKey;
        public final Posted.Action reply;
        public final Posted.Action markRead;

        Entry(String chat, String pkg, String notificationKey, Posted.Action reply, Posted.Action markRead) {
            this.chat = chat;
            this.pkg = pkg;
            this.notificationKey = notificationKey;
            this.reply = reply;
            this.markRead = markRead;
        }
    }

    private final Map<String, Entry> byChat = new HashMap<>();
    private final Map<String, Set<String>> chatsByKey = new HashMap<>();
    /** The app each chat was last seen in (kept after the notification is gone: where to compose). */
    private final Map<String, String> appOf = new HashMap<>();

    /** Notes the actions of notification p, which shows conversation c. */
    public synchronized void posted(Posted p, Conversation c) {
        MessagingApp app = MessagingApp.of(p.pkg);
        if (app == null) return;
        appOf.put(c.chat, p.pkg);
        if (appOf.size() > 5000) appOf.remove(appOf.keySet().iterator().next());
        Posted.Act reply = app.replyAction(p.actions);
        Posted.Act read = app.markReadAction(p.actions);
        if ((reply == null || reply.handle == null) && (read == null || read.handle == null)) {
            remove(c.chat);
            return;
        }
        Entry old = byChat.get(c.chat);
        if (old != null && !old.notificationKey.equals(p.key)) unlink(old);
        byChat.put(c.chat, new Entry(c.chat, p.pkg, p.key, reply == null ? null : reply.handle, read == null ? null : read.handle));
        chatsByKey.computeIfAbsent(p.key, k -> new HashSet<>()).add(c.chat);
    }

    /** The notification with this key is gone: its actions may no longer work. */
    public synchronized void removed(String notificationKey) {
        Set<String> chats = chatsByKey.remove(notificationKey);
        if (chats == null) return;
        for (String chat : chats) {
            Entry e = byChat.get(chat);
            if (e != null && e.notificationKey.equals(notificationKey)) byChat.remove(chat);
        }
    }

    /** Forgets chat's actions (one failed: the app cancelled its intent). */
    public synchronized void remove(String chat) {
        Entry e = byChat.remove(chat);
        if (e != null) unlink(e);
    }

    private void unlink(Entry e) {
        Set<String> s = chatsByKey.get(e.notificationKey);
        if (s == null) return;
        s.remove(e.chat);
        if (s.isEmpty()) chatsByKey.remove(e.notificationKey);
    }

    /** The listener lost its connection: no notification is known to be showing. */
    public synchronized void clear() {
        byChat.clear();
        chatsByKey.clear();
    }

    public synchronized Entry get(String chat) {
        return byChat.get(chat);
    }

    /** The messaging app chat was last seen in, or null. */
    public synchronized String appOf(String chat) {
        return appOf.get(chat);
    }

    public synchronized int size() {
        return byChat.size();
    }
}
