package net.rcsgate.phone.core;

import java.text.DateFormat;
import java.util.Date;
import org.json.JSONObject;

/** The agent's "status" line (docs/backends/exec.md): what the setup screen shows a person. */
public final class AgentStatus {
    public final boolean connected;
    public final long since; // unix ms of the last connect or disconnect, 0 = never
    public final int out; // phone → server, waiting for the server
    public final int in; // server → phone, waiting for the phone
    public final String error; // why the channel is down, "" while up
    public final boolean unpaired;

    public AgentStatus(boolean connected, long since, int out, int in, String error, boolean unpaired) {
        this.connected = connected;
        this.since = since;
        this.out = out;
        this.in = in;
        this.error = error == null ? "" : error;
        this.unpaired = unpaired;
    }

    public static final AgentStatus UNKNOWN = new AgentStatus(false, 0, 0, 0, "", false);

    public static AgentStatus parse(JSONObject o) {
        return new AgentStatus(o.optBoolean("connected"), o.optLong("since"), Math.max(0, o.optInt("out")),
                Math.max(0, o.optInt("in")), o.optString("error", ""), o.optBoolean("unpaired"));
    }

    /** One or two sentences for a person. */
    public String describe(DateFormat time) {
        StringBuilder sb = new StringBuilder();
        if (unpaired) {
            sb.append("The server no longer knows this phone. Pair it again.");
        } else if (connected) {
            sb.append("Connected");
            if (since > 0) sb.append(" since ").append(time.format(new Date(since)));
            sb.append('.');
        } else {
            sb.append("Not connected");
            if (since > 0) sb.append(" since ").append(time.format(new Date(since)));
            sb.append('.');
            if (!error.isEmpty()) sb.append(" Last error: ").append(error);
        }
        if (out > 0) sb.append(' ').append(plural(out, "message waits", "messages wait")).append(" to go to the server.");
        if (in > 0) sb.append(' ').append(plural(in, "message waits", "messages wait")).append(" to be sent by this phone.");
        return sb.toString();
    }

    static String plural(int n, String one, String many) {
        return n + " " + (n == 1 ? one : many);
    }

    @Override
    public boolean equals(Object o) {
        if (!(o instanceof AgentStatus)) return false;
        AgentStatus s = (AgentStatus) o;
        return connected == s.connected && since == s.since && out == s.out && in == s.in
                && error.equals(s.error) && unpaired == s.unpaired;
    }

    @Override
    public int hashCode() {
        return (int) since ^ out ^ (in << 8) ^ error.hashCode() ^ (connected ? 1 : 0) ^ (unpaired ? 2 : 0);
    }
}
