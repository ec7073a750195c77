package net.rcsgate.phone.core;

import java.io.ByteArrayOutputStream;
import java.io.File;
import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;

/**
 * Pairs this phone: runs `libagent.so pair --state DIR --name NAME --force [--dns ...] LINK`. The
 * device key is made by the agent in the app's private storage and never leaves it; the agent
 * checks the server's certificate against the link's pin.
 */
public final class Pairing {
    /** How long pairing may take at most (the agent bounds each address at 15 s). */
    public static final long TIMEOUT_MS = 60000;

    /** The outcome: ok, or an error for a person. */
    public static final class Outcome {
        public final boolean ok;
        public final String message;

        Outcome(boolean ok, String message) {
            this.ok = ok;
            this.message = message;
        }
    }

    private Pairing() {}

    public static List<String> argv(String agent, File state, String name, List<String> dns, PairLink link) {
        List<String> a = new ArrayList<>();
        a.add(agent);
        a.add("pair");
        a.add("--state");
        a.add(state.getPath());
        a.add("--name");
        a.add(name);
        a.add("--force");
        if (dns != null && !dns.isEmpty()) {
            a.add("--dns");
            a.add(String.join(",", dns));
        }
        a.add(link.text);
        return a;
    }

    public static Outcome run(List<String> argv, long timeoutMs) {
        Process p;
        try {
            p = new ProcessBuilder(argv).redirectErrorStream(true).start();
        } catch (IOException e) {
            return new Outcome(false, "The app could not start its agent: " + e.getMessage());
        }
        try {
            p.getOutputStream().close();
            final ByteArrayOutputStream out = new ByteArrayOutputStream();
            final InputStream in = p.getInputStream();
            Thread reader = new Thread(() -> {
                byte[] buf = new byte[4096];
                int n;
                try {
                    while ((n = in.read(buf)) > 0) {
                        synchronized (out) {
                            if (out.size() < 64 * 1024) out.write(buf, 0, n);
                        }
                    }
                } catch (IOException ignored) {
                    // process gone
                }
            });
            reader.start();
            if (!p.waitFor(timeoutMs, TimeUnit.MILLISECONDS)) {
                p.destroyForcibly();
                return new Outcome(false, "Pairing took too long. Is the phone online, and is the server reachable from it?");
            }
            reader.join(2000);
            String text;
            synchronized (out) {
                text = new String(out.toByteArray(), StandardCharsets.UTF_8).trim();
            }
            if (p.exitValue() == 0) return new Outcome(true, "Paired.");
            return new Outcome(false, explain(text));
        } catch (IOException | InterruptedException e) {
            p.destroyForcibly();
            return new Outcome(false, "Pairing was interrupted: " + e.getMessage());
        }
    }

    /** The agent's error line, in words a person can act on. */
    static String explain(String output) {
        String[] lines = output.split("\n");
        String last = lines.length == 0 ? "" : lines[lines.length - 1].trim();
        String prefix = "rcsgate-agent pair: ";
        if (last.startsWith(prefix)) last = last.substring(prefix.length());
        String hint = "";
        String l = last.toLowerCase();
        if (l.contains("does not match the pairing link's pin")) {
            hint = " The server is not the one that made this link (or someone is in between). Ask for a new link.";
        } else if (l.contains("token")) {
            hint = " Links work once and expire: ask for a new one (`rcsgate pair`, or `login` to the bot).";
        } else if (l.contains("no such host") || l.contains("lookup")) {
            hint = " The phone could not look up the server's name. Check its network.";
        } else if (l.contains("timeout") || l.contains("no recent network activity")) {
            hint = " The server did not answer. Is the phone online, and is the server's UDP port open?";
        }
        if (last.isEmpty()) last = "pairing failed";
        return "Pairing failed: " + last + "." + hint;
    }
}
