package net.rcsgate.phone.core;

import org.json.JSONException;
import org.json.JSONObject;

/**
 * One event of a conversation in the exec protocol's shape (docs/backends/exec.md, "Events"):
 * what a path hands to the agent, and what the agent asks a path to send. Only the fields the
 * phone's paths use today are typed; everything else travels in {@link #json} untouched.
 */
public final class Event {
    public static final String KIND_TEXT = "text";
    public static final String KIND_RECEIPT = "receipt";
    public static final String KIND_READ = "read";
    public static final String STATE_DELIVERED = "delivered";
    public static final String STATE_FAILED = "failed";

    public final JSONObject json;

    public Event(JSONObject json) {
        this.json = json;
    }

    /** A text message from the phone network. */
    public static Event text(String id, String chat, String from, String text, long tsMillis, String transport, int sim) {
        JSONObject o = new JSONObject();
        try {
            o.put("type", "event");
            o.put("id", id);
            o.put("kind", KIND_TEXT);
            o.put("chat", chat);
            o.put("from", from);
            o.put("text", text);
            if (tsMillis > 0) o.put("ts", tsMillis);
            o.put("transport", transport);
            if (sim > 0) o.put("sim", sim);
        } catch (JSONException e) {
            throw new IllegalStateException(e);
        }
        return new Event(o);
    }

    /** A delivery report (or failure) for a message the agent sent with id target. */
    public static Event receipt(String id, String chat, String target, String state, String reason, String transport) {
        JSONObject o = new JSONObject();
        try {
            o.put("type", "event");
            o.put("id", id);
            o.put("kind", KIND_RECEIPT);
            o.put("chat", chat);
            o.put("from", chat);
            o.put("target", target);
            o.put("state", state);
            if (reason != null && !reason.isEmpty()) o.put("reason", reason);
            o.put("transport", transport);
        } catch (JSONException e) {
            throw new IllegalStateException(e);
        }
        return new Event(o);
    }

    public String id() { return json.optString("id", ""); }
    public String kind() { String k = json.optString("kind", ""); return k.isEmpty() ? KIND_TEXT : k; }
    public String chat() { return json.optString("chat", ""); }
    public String text() { return json.optString("text", ""); }
    public String transport() { return json.optString("transport", ""); }
    public int sim() { return json.optInt("sim", 0); }
    public long ts() { return json.optLong("ts", 0); }
    public boolean backfill() { return json.optBoolean("backfill", false); }

    public Event withBackfill() {
        try {
            JSONObject o = new JSONObject(json.toString());
            o.put("backfill", true);
            return new Event(o);
        } catch (JSONException e) {
            throw new IllegalStateException(e);
        }
    }

    public Event withFromMe() {
        try {
            JSONObject o = new JSONObject(json.toString());
            o.put("from_me", true);
            o.remove("from");
            return new Event(o);
        } catch (JSONException e) {
            throw new IllegalStateException(e);
        }
    }

    /** The event line as the agent reads it. */
    public String line() {
        return json.toString();
    }

    /** Parses an event from its line; IllegalArgumentException if it is not one. */
    public static Event parse(String line) {
        try {
            JSONObject o = new JSONObject(line);
            if (!Ids.valid(o.optString("id", ""))) throw new IllegalArgumentException("event without a valid id");
            return new Event(o);
        } catch (JSONException e) {
            throw new IllegalArgumentException("not an event line", e);
        }
    }
}
