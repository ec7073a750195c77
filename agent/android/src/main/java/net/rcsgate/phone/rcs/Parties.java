package net.rcsgate.phone.rcs;

import java.io.File;
import java.io.FileOutputStream;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.StandardCopyOption;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.json.JSONException;
import org.json.JSONObject;

/**
 * What the bridge was told about the people in notification conversations: the name of each 1:1
 * partner (sent as a "contact" event when it changes) and each group's name and members (a
 * "group" event describes the whole group, so members seen in earlier notifications must stay in
 * it: a notification shows only who wrote lately). Bounded and kept in one small JSON file,
 * rewritten atomically on change.
 */
final class Parties {
    static final int MAX_PARTIES = 5000;
    static final int MAX_GROUPS = 500;
    static final int MAX_MEMBERS = 256;

    static final class Group {
        String name = "";
        final LinkedHashMap<String, String> members = new LinkedHashMap<>(); // from → name
    }

    private final File file;
    private final LinkedHashMap<String, String> names = new LinkedHashMap<>();
    private final LinkedHashMap<String, Group> groups = new LinkedHashMap<>();

    Parties(File file) throws IOException {
        this.file = file;
        if (!file.exists()) return;
        try {
            JSONObject o = new JSONObject(new String(Files.readAllBytes(file.toPath()), StandardCharsets.UTF_8));
            JSONObject n = o.optJSONObject("names");
            if (n != null) for (Iterator<String> it = n.keys(); it.hasNext(); ) {
                String k = it.next();
                names.put(k, n.optString(k, ""));
            }
            JSONObject g = o.optJSONObject("groups");
            if (g != null) for (Iterator<String> it = g.keys(); it.hasNext(); ) {
                String k = it.next();
                JSONObject go = g.optJSONObject(k);
                if (go == null) continue;
                Group gr = new Group();
                gr.name = go.optString("name", "");
                JSONObject mem = go.optJSONObject("members");
                if (mem != null) for (Iterator<String> mi = mem.keys(); mi.hasNext(); ) {
                    String m = mi.next();
                    gr.members.put(m, mem.optString(m, ""));
                }
                groups.put(k, gr);
            }
        } catch (JSONException e) {
            // A damaged file: names and groups are sent again as they come.
        }
    }

    /** Records chat's name; true if it is new or changed (a contact event is due). */
    synchronized boolean name(String chat, String name) throws IOException {
        if (name == null || name.isEmpty() || name.equals(names.get(chat))) return false;
        names.remove(chat);
        names.put(chat, name);
        while (names.size() > MAX_PARTIES) names.remove(names.keySet().iterator().next());
        save();
        return true;
    }

    /**
     * Adds members (from → name) and the name to group chat; the group as it is now if that
     * changed anything (a group event is due), else null.
     */
    synchronized Group group(String chat, String name, Map<String, String> members) throws IOException {
        Group g = groups.get(chat);
        boolean changed = false;
        if (g == null) {
            g = new Group();
            groups.put(chat, g);
            changed = true;
            while (groups.size() > MAX_GROUPS) groups.remove(groups.keySet().iterator().next());
        }
        if (name != null && !name.isEmpty() && !name.equals(g.name)) {
            g.name = name;
            changed = true;
        }
        for (Map.Entry<String, String> m : members.entrySet()) {
            String old = g.members.get(m.getKey());
            if (old != null && (m.getValue().isEmpty() || old.equals(m.getValue()))) continue;
            if (old == null && g.members.size() >= MAX_MEMBERS) continue;
            g.members.put(m.getKey(), m.getValue());
            changed = true;
        }
        if (!changed) return null;
        save();
        return g;
    }

    synchronized boolean knowsGroup(String chat) {
        return groups.containsKey(chat);
    }

    synchronized List<String> groupChats() {
        return new ArrayList<>(groups.keySet());
    }

    private void save() throws IOException {
        JSONObject o = new JSONObject();
        try {
            JSONObject n = new JSONObject();
            for (Map.Entry<String, String> e : names.entrySet()) n.put(e.getKey(), e.getValue());
            JSONObject g = new JSONObject();
            for (Map.Entry<String, Group> e : groups.entrySet()) {
                JSONObject go = new JSONObject();
                go.put("name", e.getValue().name);
                JSONObject mem = new JSONObject();
                for (Map.Entry<String, String> m : e.getValue().members.entrySet()) mem.put(m.getKey(), m.getValue());
                go.put("members", mem);
                g.put(e.getKey(), go);
            }
            o.put("names", n);
            o.put("groups", g);
        } catch (JSONException e) {
            throw new IllegalStateException(e);
        }
        File tmp = new File(file.getPath() + ".tmp");
        try (FileOutputStream out = new FileOutputStream(tmp)) {
            out.write(o.toString().getBytes(StandardCharsets.UTF_8));
            out.getFD().sync();
        }
        Files.move(tmp.toPath(), file.toPath(), StandardCopyOption.REPLACE_EXISTING, StandardCopyOption.ATOMIC_MOVE);
    }
}
