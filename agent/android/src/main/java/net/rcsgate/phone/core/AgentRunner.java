package net.rcsgate.phone.core;

import java.io.BufferedReader;
import java.io.File;
import java.io.IOException;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.ScheduledExecutorService;

/**
 * Runs the Go agent (`libagent.so run --backend stdio`) and keeps it running: one AgentLink per
 * run, the agent's stderr into a LogFile, a restart after a pause when it exits (the agent's own
 * journal and the app's Inbox make that lossless). An agent that says it is not paired is not
 * restarted until start is called again.
 */
public final class AgentRunner {
    /** rcsgate-agent's exit code when the server refused this device's certificate (revoked, or
     *  unknown to the server): it will not dial again until the phone is paired again. */
    static final int EXIT_UNPAIRED = 3;

    /** How the runner is doing, for the setup screen and the notification. */
    public enum State { STOPPED, STARTING, RUNNING, NOT_PAIRED, RESTARTING }

    public interface Callbacks {
        void onState(State state, String detail);

        void onStatus(AgentStatus status);

        void onRefused(String id, String reason);
    }

    /** What starts the agent: the binary and the app's private state directory. */
    public static final class Command {
        public final String agent;
        public final File state;
        public final String logLevel;

        public Command(String agent, File state, String logLevel) {
            this.agent = agent;
            this.state = state;
            this.logLevel = logLevel;
        }

        List<String> argv(List<String> dns) {
            List<String> a = new ArrayList<>();
            a.add(agent);
            a.add("run");
            a.add("--state");
            a.add(state.getPath());
            a.add("--backend");
            a.add("stdio");
            a.add("--log-level");
            a.add(logLevel);
            if (dns != null && !dns.isEmpty()) {
                a.add("--dns");
                a.add(String.join(",", dns));
            }
            return a;
        }
    }

    static final long STOP_GRACE_MS = 5000;

    private final Command command;
    private final String name;
    private final Router router;
    private final Inbox inbox;
    private final Callbacks callbacks;
    private final LogFile log;
    private final ScheduledExecutorService timer;
    private final Backoff backoff = new Backoff();

    private Thread loop;
    private Process proc;
    private AgentLink link;
    private boolean stopped = true;
    private List<String> dns;
    private int runs;
    private String helloCaps = ""; // the caps and SIMs the running agent was told

    public AgentRunner(Command command, String name, Router router, Inbox inbox, Callbacks callbacks, LogFile log, ScheduledExecutorService timer) {
        this.command = command;
        this.name = name;
        this.router = router;
        this.inbox = inbox;
        this.callbacks = callbacks;
        this.log = log;
        this.timer = timer;
    }

    public synchronized void start() {
        if (!stopped) return;
        stopped = false;
        loop = new Thread(this::supervise, "rcsgate-agent-runner");
        loop.setDaemon(true);
        loop.start();
    }

    /** Closes the agent's stdin (it stops), kills it after a grace period, and waits. */
    public void stop() throws InterruptedException {
        Thread t;
        synchronized (this) {
            if (!stopped) {
                stopped = true;
                notifyAll();
                if (proc != null) {
                    try {
                        proc.getOutputStream().close();
                    } catch (IOException ignored) {
                        // already gone
                    }
                }
            }
            t = loop;
        }
        if (t == null) return;
        t.join(STOP_GRACE_MS);
        synchronized (this) {
            if (proc != null) proc.destroyForcibly();
        }
        t.join();
    }

    /** The phone's network changed; dns are its DNS servers (kept for the next runs too). */
    public synchronized void network(List<String> dns) {
        this.dns = dns;
        if (link != null) link.network(dns);
    }

    /**
     * The paths' caps changed (a permission was granted, a path came up): the agent learns caps
     * only from a hello, so a running agent is restarted (its stdin closed; the runner starts it
     * again, the journals make that lossless). No-op when nothing changed.
     */
    public synchronized boolean refreshCaps() {
        if (proc == null || capsOf(router).equals(helloCaps)) return false;
        try {
            proc.getOutputStream().close();
        } catch (IOException ignored) {
            // already gone
        }
        return true;
    }

    static String capsOf(Router r) {
        org.json.JSONObject h = r.hello("");
        return h.optJSONObject("caps") + " " + h.optJSONArray("sims");
    }

    /** Kills the agent with SIGKILL, as Android's low-memory killer would (tests). */
    public synchronized void kill() {
        if (proc != null) proc.destroyForcibly();
    }

    /** How many times the agent was started. */
    public synchronized int runs() {
        return runs;
    }

    private void supervise() {
        while (true) {
            Process p;
            AgentLink l;
            long began = System.currentTimeMillis();
            synchronized (this) {
                if (stopped) break;
                callbacks.onState(runs == 0 ? State.STARTING : State.RESTARTING, "");
                ProcessBuilder pb = new ProcessBuilder(command.argv(dns));
                pb.redirectErrorStream(false);
                try {
                    p = pb.start();
                } catch (IOException e) {
                    log.line("app: cannot start the agent: " + e.getMessage());
                    callbacks.onState(State.RESTARTING, "cannot start the agent: " + e.getMessage());
                    if (!pause(backoff.next(0))) break;
                    continue;
                }
                runs++;
                proc = p;
                helloCaps = capsOf(router);
                l = new AgentLink(p.getInputStream(), p.getOutputStream(), router, inbox, new LinkCallbacks(), timer);
                link = l;
            }
            StringBuilder lastErr = new StringBuilder();
            Thread err = pumpStderr(p, lastErr);
            try {
                final List<String> d;
                synchronized (this) {
                    d = dns;
                }
                final AgentLink hello = l;
                hello.start(name, () -> {
                    if (d != null) hello.network(d);
                    callbacks.onState(State.RUNNING, "");
                });
            } catch (IOException e) {
                log.line("app: the agent did not take the hello: " + e.getMessage());
            }
            int code = waitFor(p);
            try {
                l.join(STOP_GRACE_MS);
                err.join(STOP_GRACE_MS);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
            l.close();
            String last;
            synchronized (lastErr) {
                last = lastErr.toString();
            }
            synchronized (this) {
                proc = null;
                link = null;
                if (stopped) break;
            }
            log.line("app: the agent exited with code " + code);
            if (code == EXIT_UNPAIRED || (code != 0 && last.contains("not paired"))) {
                synchronized (this) {
                    stopped = true;
                }
                callbacks.onState(State.NOT_PAIRED, "");
                return;
            }
            long wait = backoff.next(System.currentTimeMillis() - began);
            callbacks.onState(State.RESTARTING, last);
            if (!pause(wait)) break;
        }
        callbacks.onState(State.STOPPED, "");
    }

    private static int waitFor(Process p) {
        while (true) {
            try {
                return p.waitFor();
            } catch (InterruptedException e) {
                // keep waiting: the process is ours to reap
            }
        }
    }

    /** Waits ms or until stop; false if stopped. */
    private synchronized boolean pause(long ms) {
        long end = System.currentTimeMillis() + ms;
        while (!stopped) {
            long left = end - System.currentTimeMillis();
            if (left <= 0) return true;
            try {
                wait(left);
            } catch (InterruptedException e) {
                return false;
            }
        }
        return false;
    }

    private Thread pumpStderr(final Process p, final StringBuilder lastErr) {
        Thread t = new Thread(() -> {
            try (BufferedReader r = new BufferedReader(new InputStreamReader(p.getErrorStream(), StandardCharsets.UTF_8))) {
                String line;
                while ((line = r.readLine()) != null) {
                    if (line.length() > 4096) line = line.substring(0, 4096);
                    log.line(line);
                    synchronized (lastErr) {
                        lastErr.setLength(0);
                        lastErr.append(line);
                    }
                }
            } catch (IOException ignored) {
                // the agent is gone
            }
        }, "rcsgate-agent-stderr");
        t.setDaemon(true);
        t.start();
        return t;
    }

    private final class LinkCallbacks implements AgentLink.Listener {
        @Override
        public void onStatus(AgentStatus s) {
            callbacks.onStatus(s);
        }

        @Override
        public void onRefused(String id, String reason) {
            callbacks.onRefused(id, reason);
        }

        @Override
        public void onClosed(IOException cause) {
            // the runner notices the exit itself
        }
    }
}
