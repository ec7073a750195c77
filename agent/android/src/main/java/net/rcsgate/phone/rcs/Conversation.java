package net.rcsgate.phone.rcs;

import java.util.ArrayList;
import java.util.List;

/**
 * One conversation as a notification shows it, in the exec protocol's terms: the chat (a number,
 * "g:<hash>" for a group, "c:<hash>" for a partner the phone knows by name only), its name, and
 * its messages with stable ids, oldest first.
 */
public final class Conversation {
    public final String pkg;
    /** The app's own key of the conversation (its shortcut id, else its title): stable across re-posts. */
    public final String key;
    public final String chat;
    public final boolean group;
    /** The group's name, or the 1:1 partner's name as the app shows it ("" if none). */
    public final String name;
    public final List<Message> messages = new ArrayList<>();

    Conversation(String pkg, String key, String chat, boolean group, String name) {
        this.pkg = pkg;
        this.key = key;
        this.chat = chat;
        this.group = group;
        this.name = name;
    }

    public static final class Message {
        /** rcs-<hash of app, conversation, time, sender, text>: the same message always gets it. */
        public final String id;
        public final boolean fromMe;
        /** The sender as the bridge keys it (a number or "c:<hash>"); the chat for 1:1, "" from me. */
        public final String from;
        public final String senderName;
        public final String text;
        public final long time;
        /** An image or other file the message carries, if the app put one in the notification. */
        public final String mime;
        public final String dataUri;

        Message(String id, boolean fromMe, String from, String senderName, String text, long time, String mime, String dataUri) {
            this.id = id;
            this.fromMe = fromMe;
            this.from = from;
            this.senderName = senderName;
            this.text = text;
            this.time = time;
            this.mime = mime;
            this.dataUri = dataUri;
        }
    }
}
