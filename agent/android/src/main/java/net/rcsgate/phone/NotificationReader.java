package net.rcsgate.phone;

import android.app.Notification;
import android.app.PendingIntent;
import android.app.Person;
import android.app.RemoteInput;
import android.content.Context;
import android.content.Intent;
import android.os.Build;
import android.os.Bundle;
import android.os.Parcelable;
import android.service.notification.StatusBarNotification;
import net.rcsgate.phone.rcs.Posted;

/**
 * A StatusBarNotification as the RCS path reads it (Posted). Every field is read on its own and a
 * field that is missing, of the wrong type or unreadable (a Bundle that fails to unparcel throws
 * on access) is left empty: what one app or one broken notification does must not stop the
 * listener. The keys are the platform's (Notification.EXTRA_*, MessagingStyle.Message's bundle
 * keys "text", "time", "sender", "sender_person", "type", "uri").
 */
final class NotificationReader {
    /** Messages read from one notification at most (history included). */
    static final int MAX_MESSAGES = 200;
    static final int MAX_ACTIONS = 16;

    private NotificationReader() {}

    static Posted read(Context ctx, StatusBarNotification sbn) {
        Posted p = new Posted();
        if (sbn == null) return p;
        p.pkg = str(safe(sbn::getPackageName));
        p.key = str(safe(sbn::getKey));
        Long t = safe(sbn::getPostTime);
        p.postTime = t == null ? 0 : t;
        Notification n = safe(sbn::getNotification);
        if (n == null) return p;
        read(ctx, n, p);
        return p;
    }

    static void read(Context ctx, Notification n, Posted p) {
        p.shortcutId = safe(n::getShortcutId);
        p.groupSummary = (n.flags & Notification.FLAG_GROUP_SUMMARY) != 0;
        Bundle x = n.extras;
        if (x != null) {
            p.title = chars(x, Notification.EXTRA_TITLE);
            p.text = chars(x, Notification.EXTRA_TEXT);
            p.conversationTitle = chars(x, Notification.EXTRA_CONVERSATION_TITLE);
            Boolean has = safe(() -> x.containsKey(Notification.EXTRA_IS_GROUP_CONVERSATION));
            if (has != null && has) p.isGroup = safe(() -> x.getBoolean(Notification.EXTRA_IS_GROUP_CONVERSATION));
            p.selfName = chars(x, Notification.EXTRA_SELF_DISPLAY_NAME);
            if (Build.VERSION.SDK_INT >= 28) {
                Object me = safe(() -> x.get(Notification.EXTRA_MESSAGING_PERSON));
                if (me instanceof Person) {
                    Person self = (Person) me;
                    String name = str(safe(self::getName));
                    if (!name.isEmpty()) p.selfName = name;
                    p.selfKey = safe(self::getKey);
                }
            }
            messages(x, Notification.EXTRA_HISTORIC_MESSAGES, p);
            messages(x, Notification.EXTRA_MESSAGES, p);
        }
        Notification.Action[] acts = safe(() -> n.actions);
        if (acts != null) {
            for (int i = 0; i < acts.length && p.actions.size() < MAX_ACTIONS; i++) {
                Posted.Act a = action(ctx, acts[i]);
                if (a != null) p.actions.add(a);
            }
        }
        // Apps may put their reply action only in the wearable extension (android.wearable.EXTENSIONS).
        java.util.List<Notification.Action> wear = safe(() -> new Notification.WearableExtender(n).getActions());
        if (wear != null) {
            for (Notification.Action w : wear) {
                if (p.actions.size() >= MAX_ACTIONS) break;
                Posted.Act a = action(ctx, w);
                if (a != null) p.actions.add(a);
            }
        }
    }

    private static void messages(Bundle x, String key, Posted p) {
        Object v = safe(() -> x.get(key));
        if (!(v instanceof Parcelable[])) return;
        for (Parcelable item : (Parcelable[]) v) {
            if (p.messages.size() >= MAX_MESSAGES) return;
            if (!(item instanceof Bundle)) continue;
            Posted.Msg m = message((Bundle) item);
            if (m != null) p.messages.add(m);
        }
    }

    static Posted.Msg message(Bundle b) {
        Posted.Msg m = new Posted.Msg();
        m.text = chars(b, "text");
        Object time = safe(() -> b.get("time"));
        m.time = time instanceof Long ? (Long) time : 0;
        Object person = safe(() -> b.get("sender_person"));
        CharSequence legacy = safe(() -> b.getCharSequence("sender"));
        if (person instanceof Person) {
            Person sp = (Person) person;
            m.senderName = str(safe(sp::getName));
            m.senderKey = safe(sp::getKey);
            m.senderUri = safe(sp::getUri);
        } else if (legacy != null) {
            m.senderName = legacy.toString();
        } else {
            m.noSender = true; // MessagingStyle: no sender means the phone's owner
        }
        Object mime = safe(() -> b.get("type"));
        Object uri = safe(() -> b.get("uri"));
        if (mime instanceof String && uri != null) {
            m.mime = (String) mime;
            m.dataUri = String.valueOf(uri);
        }
        return m;
    }

    private static Posted.Act action(Context ctx, Notification.Action a) {
        if (a == null) return null;
        Posted.Act out = new Posted.Act();
        out.title = str(safe(() -> a.title));
        if (Build.VERSION.SDK_INT >= 28) {
            Integer sem = safe(a::getSemanticAction);
            out.semantic = sem == null ? 0 : sem;
        }
        RemoteInput[] inputs = safe(a::getRemoteInputs);
        if (inputs != null) for (RemoteInput ri : inputs) if (ri != null && ri.getAllowFreeFormInput()) out.freeFormInput = true;
        PendingIntent pi = safe(() -> a.actionIntent);
        if (pi != null) out.handle = new Fire(ctx, pi, out.freeFormInput ? inputs : null);
        return out;
    }

    /** Fires an action: a reply fills its RemoteInputs with the text first. */
    static final class Fire implements Posted.Action {
        private final Context ctx;
        private final PendingIntent pi;
        private final RemoteInput[] inputs;

        Fire(Context ctx, PendingIntent pi, RemoteInput[] inputs) {
            this.ctx = ctx;
            this.pi = pi;
            this.inputs = inputs;
        }

        @Override
        public void fire(String text) throws Exception {
            if (inputs == null || text == null) {
                pi.send();
                return;
            }
            Intent fill = new Intent();
            Bundle results = new Bundle();
            for (RemoteInput ri : inputs) if (ri != null && ri.getAllowFreeFormInput()) results.putCharSequence(ri.getResultKey(), text);
            RemoteInput.addResultsToIntent(inputs, fill, results);
            if (Build.VERSION.SDK_INT >= 28) RemoteInput.setResultsSource(fill, RemoteInput.SOURCE_FREE_FORM_INPUT);
            pi.send(ctx, 0, fill);
        }
    }

    private static String chars(Bundle b, String key) {
        Object v = safe(() -> b.get(key));
        return v instanceof CharSequence ? v.toString() : null;
    }

    private static String str(Object o) {
        return o == null ? "" : o.toString();
    }

    interface Get<T> {
        T get() throws Exception;
    }

    /** v's value, or null if reading it throws (a broken Bundle, a class the app made up). */
    static <T> T safe(Get<T> v) {
        try {
            return v.get();
        } catch (Exception | LinkageError e) {
            return null;
        }
    }
}
