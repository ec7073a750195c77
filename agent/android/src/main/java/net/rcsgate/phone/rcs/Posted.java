package net.rcsgate.phone.rcs;

import java.util.ArrayList;
import java.util.List;

/**
 * A messaging app's notification as the platform posted it, reduced to what the RCS path reads:
 * filled by the framework side (NotificationReader, from a StatusBarNotification) or by a test.
 * Every field may be missing (null, 0, empty): an app owes us nothing, and a parser that trusts
 * a field is a parser that crashes.
 */
public final class Posted {
    /** The posting app's package (com.google.android.apps.messaging, ...). */
    public String pkg = "";
    /** The platform's key of the notification (StatusBarNotification.getKey()). */
    public String key = "";
    public long postTime;
    /** Notification.getShortcutId(): the conversation, on Android 11+ conversation notifications. */
    public String shortcutId;
    /** A group summary stands for other notifications and carries no conversation of its own. */
    public boolean groupSummary;
    /** EXTRA_TITLE: the sender's or the group's name. */
    public String title;
    /** EXTRA_TEXT: the newest message, for notifications that are not MessagingStyle. */
    public String text;
    /** EXTRA_CONVERSATION_TITLE: a group's name. */
    public String conversationTitle;
    /** EXTRA_IS_GROUP_CONVERSATION; null when the extra is absent. */
    public Boolean isGroup;
    /** EXTRA_MESSAGING_PERSON / EXTRA_SELF_DISPLAY_NAME: the phone's owner. */
    public String selfName;
    public String selfKey;
    /** EXTRA_MESSAGES (and EXTRA_HISTORIC_MESSAGES first), oldest first as the app gave them. */
    public final List<Msg> messages = new ArrayList<>();
    public final List<Act> actions = new ArrayList<>();

    /** One MessagingStyle.Message bundle. */
    public static final class Msg {
        public String text;
        /** KEY_TIMESTAMP, unix ms. */
        public long time;
        /** The Person's name, or the legacy KEY_SENDER text. */
        public String senderName;
        /** Person.getKey(). */
        public String senderKey;
        /** Person.getUri(): "tel:…", "mailto:…" or a contacts lookup URI (Person.Builder.setUri). */
        public String senderUri;
        /** No sender at all: MessagingStyle's convention for the phone's owner (Message(…, null)). */
        public boolean noSender;
        /** KEY_DATA_MIME_TYPE and KEY_DATA_URI: an image (or other file) in the message. */
        public String mime;
        public String dataUri;

        public Msg() {}

        public Msg(String text, long time, String senderName) {
            this.text = text;
            this.time = time;
            this.senderName = senderName;
            this.noSender = senderName == null;
        }
    }

    /** One Notification.Action. */
    public static final class Act {
        public String title;
        /** Notification.Action.getSemanticAction(): 1 = SEMANTIC_ACTION_REPLY, 2 = MARK_AS_READ. */
        public int semantic;
        /** The action carries a free-form RemoteInput (it is a reply action). */
        public boolean freeFormInput;
        /** The platform side's way of firing it; null in fixtures that are only parsed. */
        public Action handle;

        public Act() {}

        public Act(String title, int semantic, boolean freeFormInput, Action handle) {
            this.title = title;
            this.semantic = semantic;
            this.freeFormInput = freeFormInput;
            this.handle = handle;
        }
    }

    /** A notification action the app can fire (PendingIntent.send with the RemoteInput filled). */
    public interface Action {
        /** Fires the action; text is the reply for a RemoteInput action, null otherwise. */
        void fire(String text) throws Exception;
    }

    public static final int SEMANTIC_REPLY = 1;
    public static final int SEMANTIC_MARK_AS_READ = 2;
}
