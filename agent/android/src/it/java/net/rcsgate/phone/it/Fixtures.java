package net.rcsgate.phone.it;

import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import net.rcsgate.phone.rcs.Posted;
import org.json.JSONArray;
import org.json.JSONException;
import org.json.JSONObject;

/**
 * The messaging apps' notifications from src/fixtures/notifications (see its README), as the RCS
 * path reads them: JSON in the platform's extras keys → Posted. The actions' handles are made by
 * the caller (they record what was fired).
 */
public final class Fixtures {
    /** Makes the handle of one action of a notification. */
    public interface Handles {
        Posted.Action handle(String notificationKey, String title, boolean reply);
    }

    private Fixtures() {}

    /** A classpath resource (fixtures/...) as text. */
    public static String text(String path) throws IOException {
        try (InputStream in = Fixtures.class.getClassLoader().getResourceAsStream(path)) {
            if (in == null) throw new IOException("no fixture " + path + " on the classpath");
            ByteArrayOutputStream b = new ByteArrayOutputStream();
            byte[] buf = new byte[8192];
            for (int n; (n = in.read(buf)) > 0; ) b.write(buf, 0, n);
            return new String(b.toByteArray(), StandardCharsets.UTF_8);
        }
    }

    public static JSONObject notification(String name) throws IOException {
        try {
            return new JSONObject(text("fixtures/notifications/" + name + ".json"));
        } catch (JSONException e) {
            throw new IOException("fixture " + name + ": " + e.getMessage());
        }
    }

    public static Posted posted(String name, Handles h) throws IOException {
        return posted(notification(name), h);
    }

    /** The notification o as the framework side would read it. */
    public static Posted posted(JSONObject o, Handles h) {
        Posted p = new Posted();
        p.pkg = o.optString("pkg", "");
        p.key = o.optString("key", "");
        p.postTime = o.optLong("postTime", 0);
        p.shortcutId = o.isNull("shortcutId") ? null : o.optString("shortcutId", null);
        p.groupSummary = (o.optInt("flags", 0) & 512) != 0;
        JSONObject x = o.optJSONObject("extras");
        if (x == null) x = new JSONObject();
        p.title = str(x, "android.title");
        p.text = str(x, "android.text");
        p.conversationTitle = str(x, "android.conversationTitle");
        if (x.has("android.isGroupConversation")) p.isGroup = x.optBoolean("android.isGroupConversation");
        p.selfName = str(x, "android.selfDisplayName");
        JSONObject me = x.optJSONObject("android.messagingUser");
        if (me != null) {
            if (str(me, "name") != null) p.selfName = str(me, "name");
            p.selfKey = str(me, "key");
        }
        for (String key : new String[] {"android.messages.historic", "android.messages"}) {
            JSONArray ms = x.optJSONArray(key);
            if (ms == null) continue;
            for (int i = 0; i < ms.length(); i++) {
                JSONObject m = ms.optJSONObject(i);
                if (m != null) p.messages.add(message(m));
            }
        }
        JSONArray acts = o.optJSONArray("actions");
        if (acts != null) {
            for (int i = 0; i < acts.length(); i++) {
                JSONObject a = acts.optJSONObject(i);
                if (a == null) continue;
                boolean reply = a.has("remoteInput");
                String title = a.optString("title", "");
                p.actions.add(new Posted.Act(title, a.optInt("semantic", 0), reply, h == null ? null : h.handle(p.key, title, reply)));
            }
        }
        return p;
    }

    static Posted.Msg message(JSONObject m) {
        Posted.Msg out = new Posted.Msg();
        out.text = str(m, "text");
        out.time = m.optLong("time", 0);
        JSONObject person = m.optJSONObject("sender_person");
        if (person != null) {
            out.senderName = str(person, "name");
            out.senderKey = str(person, "key");
            out.senderUri = str(person, "uri");
        } else if (str(m, "sender") != null) {
            out.senderName = str(m, "sender");
        } else {
            out.noSender = true;
        }
        out.mime = str(m, "type");
        out.dataUri = str(m, "uri");
        return out;
    }

    static String str(JSONObject o, String k) {
        return o.has(k) && !o.isNull(k) ? o.optString(k) : null;
    }

    /** Every fixture's name. */
    public static List<String> names() {
        List<String> out = new ArrayList<>();
        for (String n : new String[] {"google-1to1", "google-1to1-update", "google-unknown-number", "google-group", "google-image",
                "google-summary", "samsung-1to1", "samsung-group"}) out.add(n);
        return out;
    }
}
