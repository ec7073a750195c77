package net.rcsgate.phone.core;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.TreeSet;
import java.util.concurrent.CopyOnWriteArrayList;
import org.json.JSONArray;
import org.json.JSONException;
import org.json.JSONObject;

/**
 * The app's paths to the phone's messaging, in order of preference. It is the one place where
 * the caps per transport are assembled for the hello, and it picks the path for each command:
 * the one that carries the transport the chat asks for, or, when the chat has no preference, the
 * first path that carries anything. A transport no path carries is refused for good rather than
 * sent over another one (an RCS chat must not silently become SMS).
 */
public final class Router {
    private final List<MessagingPath> paths = new CopyOnWriteArrayList<>();

    public void add(MessagingPath p) {
        paths.add(p);
    }

    public List<MessagingPath> paths() {
        return new ArrayList<>(paths);
    }

    /** The hello line: protocol 1, caps per transport (first path wins a transport), SIM slots. */
    public JSONObject hello(String name) {
        JSONObject caps = new JSONObject();
        TreeSet<Integer> sims = new TreeSet<>();
        try {
            for (MessagingPath p : paths) {
                for (Map.Entry<String, JSONObject> e : p.caps().entrySet()) {
                    if (!caps.has(e.getKey())) caps.put(e.getKey(), e.getValue());
                }
                sims.addAll(p.sims());
            }
            JSONObject h = new JSONObject();
            h.put("type", "hello");
            h.put("protocol", 1);
            h.put("name", name);
            h.put("caps", caps);
            if (sims.size() > 1) h.put("sims", new JSONArray(sims));
            return h;
        } catch (JSONException e) {
            throw new IllegalStateException(e);
        }
    }

    /** The path for a command about chat over transport ("" = any), or null. */
    public MessagingPath pathFor(String transport) {
        for (MessagingPath p : paths) {
            Map<String, JSONObject> caps = p.caps();
            if (transport.isEmpty() ? !caps.isEmpty() : caps.containsKey(transport)) return p;
        }
        return null;
    }

    /**
     * The path for ev: with no transport named, the first path that prefers the chat (a
     * conversation only it can reach), else as pathFor(transport).
     */
    public MessagingPath pathFor(Event ev) {
        if (ev.transport().isEmpty()) {
            for (MessagingPath p : paths) if (p.prefers(ev)) return p;
        }
        return pathFor(ev.transport());
    }

    public void send(Event ev, Result result) {
        MessagingPath p = pathFor(ev);
        if (p == null) {
            result.fail(true, noPath(ev.transport()));
            return;
        }
        p.send(ev, result);
    }

    public void typing(String chat, String transport, boolean active, Result result) {
        MessagingPath p = pathFor(transport);
        if (p == null) {
            result.fail(true, noPath(transport));
            return;
        }
        p.typing(chat, active, result);
    }

    static String noPath(String transport) {
        if (transport.isEmpty()) return "this phone cannot send messages yet (open the rcsgate app and finish its setup)";
        return transport + " is not available on this phone";
    }
}
