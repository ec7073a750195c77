package net.rcsgate.phone.core;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStream;
import java.io.InputStreamReader;
import java.io.OutputStream;
import java.nio.charset.StandardCharsets;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.logging.Level;
import java.util.logging.Logger;
import org.json.JSONArray;
import org.json.JSONException;
import org.json.JSONObject;

/**
 * The app's side of the exec protocol (docs/backends/exec.md) with one run of the agent, over the
 * agent's stdin and stdout: hello with the Router's caps, every event of the Inbox offered until
 * the agent acks it, the agent's send and typing commands handed to the Router and answered, its
 * status lines passed to the Listener, and the phone's network news passed on.
 */
public final class AgentLink implements Inbox.Listener {
    /** Events offered and not yet answered at most (the agent queues 64). */
    static final int WINDOW = 32;
    /** Pause before an event the agent did not take ("nack") is offered again. */
    static final long RETRY_MS = 2000;
    long retryMs = RETRY_MS; // tests shorten it

    public interface Listener {
        void onStatus(AgentStatus s);

        /** The agent refused an event for good (it broke the rules); it was dropped. */
        void onRefused(String id, String reason);

        /** The agent's output ended: it exited (or was killed). */
        void onClosed(IOException cause);
    }

    private static final Logger LOG = Logger.getLogger("rcsgate.link");

    private final InputStream in;
    private final OutputStream out;
    private final Router router;
    private final Inbox inbox;
    private final Listener listener;
    private final ScheduledExecutorService timer;
    private final Set<String> offered = new HashSet<>();
    private final AtomicBoolean closed = new AtomicBoolean();
    private boolean welcomed;
    private Thread reader;

    public AgentLink(InputStream in, OutputStream out, Router router, Inbox inbox, Listener listener, ScheduledExecutorService timer) {
        this.in = in;
        this.out = out;
        this.router = router;
        this.inbox = inbox;
        this.listener = listener;
        this.timer = timer;
    }

    /** Says hello and starts reading the agent's lines on a thread of its own. */
    public void start(String name) throws IOException {
        start(name, () -> {});
    }

    /**
     * Says hello, runs ready, then starts reading the agent's lines on a thread of its own: what
     * ready reports (the runner's "running") comes before anything the agent says.
     */
    public void start(String name, Runnable ready) throws IOException {
        write(router.hello(name).toString());
        ready.run();
        inbox.addListener(this);
        reader = new Thread(this::readLoop, "rcsgate-agent-reader");
        reader.setDaemon(true);
        reader.start();
    }

    /** Tells the agent the network changed; dns (may be null) are its DNS servers. */
    public void network(List<String> dns) {
        JSONObject o = new JSONObject();
        try {
            o.put("type", "network");
            if (dns != null) o.put("dns", new JSONArray(dns));
        } catch (JSONException e) {
            throw new IllegalStateException(e);
        }
        tryWrite(o.toString());
    }

    /** Stops offering events; the process's streams belong to the caller. */
    public void close() {
        closed.set(true);
        inbox.removeListener(this);
    }

    /** Waits for the reader to finish (after the agent's output ended). */
    public void join(long millis) throws InterruptedException {
        if (reader != null) reader.join(millis);
    }

    private void readLoop() {
        IOException cause = null;
        try {
            BufferedReader r = new BufferedReader(new InputStreamReader(in, StandardCharsets.UTF_8));
            String line;
            while ((line = r.readLine()) != null) {
                handle(line);
            }
        } catch (IOException e) {
            cause = e;
        } finally {
            close();
            listener.onClosed(cause);
        }
    }

    void handle(String line) {
        JSONObject o;
        try {
            o = new JSONObject(line);
        } catch (JSONException e) {
            LOG.warning("agent wrote a line that is not JSON (" + line.length() + " chars); skipped");
            return;
        }
        String type = o.optString("type", "");
        switch (type) {
            case "welcome":
                synchronized (this) {
                    welcomed = true;
                }
                offerMore();
                break;
            case "ack":
                answered(o.optString("id", ""), true, false, "");
                break;
            case "nack":
                answered(o.optString("id", ""), false, o.optBoolean("permanent"), o.optString("reason", ""));
                break;
            case "send":
                router.send(new Event(o), result(o.optString("req", "")));
                break;
            case "typing":
                router.typing(o.optString("chat", ""), o.optString("transport", ""), o.optBoolean("active"), result(o.optString("req", "")));
                break;
            case "status":
                listener.onStatus(AgentStatus.parse(o));
                break;
            default:
                LOG.fine("agent line of unknown type ignored: " + type);
        }
    }

    private void answered(String id, boolean ok, boolean permanent, String reason) {
        synchronized (this) {
            if (!offered.remove(id)) return;
        }
        try {
            if (ok) {
                inbox.ack(id);
            } else if (permanent) {
                LOG.warning("agent refused event " + id + " for good: " + reason);
                inbox.ack(id);
                listener.onRefused(id, reason);
            } else {
                // Not taken now (busy, journal full): offered again after a pause.
                synchronized (this) {
                    offered.add(id);
                }
                timer.schedule(() -> {
                    synchronized (this) {
                        offered.remove(id);
                    }
                    offerMore();
                }, retryMs, TimeUnit.MILLISECONDS);
                return;
            }
        } catch (IOException e) {
            LOG.log(Level.SEVERE, "could not record the agent's answer for " + id, e);
        }
        offerMore();
    }

    @Override
    public void onPut(Event ev) {
        offerMore();
    }

    /** Offers waiting events not yet offered, up to the window. */
    void offerMore() {
        for (Event ev : inbox.waiting()) {
            synchronized (this) {
                if (!welcomed || closed.get() || offered.size() >= WINDOW) return;
                if (offered.contains(ev.id()) || !inbox.isWaiting(ev.id())) continue;
                offered.add(ev.id());
            }
            if (!tryWrite(ev.line())) return;
        }
    }

    private Result result(final String req) {
        return new Result() {
            private final AtomicBoolean done = new AtomicBoolean();

            @Override
            public void ok() {
                if (done.compareAndSet(false, true)) tryWrite("{\"type\":\"result\",\"req\":" + JSONObject.quote(req) + ",\"ok\":true}");
            }

            @Override
            public void fail(boolean permanent, String reason) {
                if (!done.compareAndSet(false, true)) return;
                JSONObject o = new JSONObject();
                try {
                    o.put("type", "result");
                    o.put("req", req);
                    o.put("ok", false);
                    if (permanent) o.put("permanent", true);
                    o.put("reason", clip(reason, 256));
                } catch (JSONException e) {
                    throw new IllegalStateException(e);
                }
                tryWrite(o.toString());
            }
        };
    }

    static String clip(String s, int maxBytes) {
        if (s == null) return "";
        byte[] b = s.getBytes(StandardCharsets.UTF_8);
        if (b.length <= maxBytes) return s;
        int n = s.length();
        while (n > 0 && s.substring(0, n).getBytes(StandardCharsets.UTF_8).length > maxBytes) n--;
        return s.substring(0, n);
    }

    private boolean tryWrite(String line) {
        try {
            write(line);
            return true;
        } catch (IOException e) {
            LOG.fine("agent's stdin is closed: " + e.getMessage());
            return false;
        }
    }

    private void write(String line) throws IOException {
        byte[] b = (line + "\n").getBytes(StandardCharsets.UTF_8);
        synchronized (out) {
            out.write(b);
            out.flush();
        }
    }
}
