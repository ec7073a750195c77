package net.rcsgate.phone.it;

import java.io.BufferedReader;
import java.io.File;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import net.rcsgate.phone.core.AgentRunner;
import net.rcsgate.phone.core.AgentStatus;
import net.rcsgate.phone.core.Event;
import net.rcsgate.phone.core.Inbox;
import net.rcsgate.phone.core.LogFile;
import net.rcsgate.phone.core.PairLink;
import net.rcsgate.phone.core.Pairing;
import net.rcsgate.phone.core.Router;
import net.rcsgate.phone.sms.IncomingSms;
import net.rcsgate.phone.sms.SendLog;
import net.rcsgate.phone.sms.SmsPath;
import net.rcsgate.phone.sms.SmsPlatform;
import org.json.JSONObject;

/**
 * The phone app's protocol side on a JVM, for the integration test (internal/e2e) and the
 * benchmark: the app's real classes (Pairing, AgentRunner, AgentLink, Router, SmsPath, SendLog,
 * Inbox, IncomingSms) run the real Go agent; only the platform (SmsManager, the SMS broadcast) is
 * fake. It pairs with LINK, runs the agent, and is driven by JSON lines on stdin:
 *
 * <pre>
 *   {"cmd":"receive","from":"+1…","text":"…","ts":123}   the platform hands the app an SMS
 *   {"cmd":"deliver","id":"$ev","ok":true}               the delivery report for a sent SMS
 *   {"cmd":"kill"}                                       SIGKILL the agent (it is restarted)
 *   {"cmd":"quit"}
 * </pre>
 *
 * and reports on stdout: {"ev":"paired"}, {"ev":"status",...}, {"ev":"sms","id","to","text",
 * "parts"} (an SmsManager send), {"ev":"stored","id"} (an SMS put in the Inbox), {"ev":"error",...}.
 * With --echo NUMBER, an SMS sent to NUMBER comes straight back from it (the benchmark's echo).
 * With --rcs, the RCS path through a faked messaging app runs too (RcsDriver: its commands).
 */
public final class PhoneDriver {
    private static final PrintStream OUT = System.out;

    static synchronized void report(JSONObject o) {
        OUT.println(o.toString());
        OUT.flush();
    }

    static JSONObject ev(String name) {
        JSONObject o = new JSONObject();
        put(o, "ev", name);
        return o;
    }

    static JSONObject put(JSONObject o, String k, Object v) {
        try {
            o.put(k, v);
        } catch (org.json.JSONException e) {
            throw new IllegalStateException(e);
        }
        return o;
    }

    /** The platform's SMS: sends are reported; sent results come at once, delivery on command. */
    static final class FakeSms implements SmsPlatform {
        SmsPath path;
        Inbox inbox;
        String echo = "";
        final Map<String, Integer> parts = new ConcurrentHashMap<>();

        @Override
        public boolean canSend() {
            return true;
        }

        @Override
        public List<Sim> sims() {
            List<Sim> s = new ArrayList<>();
            s.add(new Sim(1, 11));
            s.add(new Sim(2, 12));
            return s;
        }

        @Override
        public ArrayList<String> divide(int subscriptionId, String text) {
            ArrayList<String> out = new ArrayList<>();
            for (int i = 0; i < text.length(); i += 153) out.add(text.substring(i, Math.min(text.length(), i + 153)));
            return out;
        }

        @Override
        public void send(int subscriptionId, String to, ArrayList<String> p, String id, boolean deliveryReports) {
            parts.put(id, p.size());
            JSONObject o = ev("sms");
            put(o, "id", id);
            put(o, "to", to);
            put(o, "text", String.join("", p));
            put(o, "parts", p.size());
            put(o, "sub", subscriptionId);
            report(o);
            // The radio takes it: the sent intents come back (on another thread, as on a phone).
            new Thread(() -> {
                for (int i = 0; i < p.size(); i++) path.onSent(id, i, SmsPath.RESULT_OK);
                if (to.equals(echo)) receive(inbox, sims(), to, String.join("", p), System.currentTimeMillis());
            }).start();
        }

        @Override
        public boolean sentInProvider(String to, String text, long sinceMillis) {
            return false;
        }
    }

    static void receive(Inbox inbox, List<SmsPlatform.Sim> sims, String from, String text, long ts) {
        for (Event e : IncomingSms.events(new IncomingSms.Received(from, text, ts, System.currentTimeMillis(), 11), sims)) {
            try {
                inbox.put(e);
                report(put(ev("stored"), "id", e.id()));
            } catch (IOException ex) {
                report(put(ev("error"), "message", ex.getMessage()));
            }
        }
    }

    public static void main(String[] args) throws Exception {
        String agent = null;
        String files = null;
        String link = null;
        String echo = "";
        boolean rcs = false;
        for (int i = 0; i < args.length; i++) {
            switch (args[i]) {
                case "--agent": agent = args[++i]; break;
                case "--files": files = args[++i]; break;
                case "--link": link = args[++i]; break;
                case "--echo": echo = args[++i]; break;
                case "--rcs": rcs = true; break;
                default: throw new IllegalArgumentException("unknown argument " + args[i]);
            }
        }
        if (agent == null || files == null || link == null) {
            System.err.println("usage: PhoneDriver --agent PATH --files DIR --link LINK [--echo NUMBER] [--rcs]");
            System.exit(2);
        }
        File dir = new File(files);
        dir.mkdirs();
        File state = new File(dir, "agent");
        LogFile log = new LogFile(new File(dir, "agent.log"));

        if (!new File(state, "device.crt").exists()) {
            Pairing.Outcome o = Pairing.run(Pairing.argv(agent, state, "it-phone", Collections.singletonList("127.0.0.1"), PairLink.parse(link)), Pairing.TIMEOUT_MS);
            if (!o.ok) {
                report(put(ev("error"), "message", o.message));
                System.exit(1);
            }
        }
        report(ev("paired"));

        Inbox inbox = new Inbox(new File(dir, "inbox.log"));
        SendLog sends = new SendLog(new File(dir, "sends.log"));
        FakeSms sms = new FakeSms();
        sms.echo = echo;
        SmsPath path = new SmsPath(sms, sends, inbox, System::currentTimeMillis);
        sms.path = path;
        sms.inbox = inbox;
        Router router = new Router();
        router.add(path);
        RcsDriver rcsDriver = rcs ? new RcsDriver(dir, inbox) : null;
        if (rcsDriver != null) rcsDriver.addTo(router);
        ScheduledExecutorService timer = Executors.newSingleThreadScheduledExecutor(r -> {
            Thread t = new Thread(r, "timer");
            t.setDaemon(true);
            return t;
        });
        AgentRunner runner = new AgentRunner(new AgentRunner.Command(agent, state, "debug"), "rcsgate-phone/it", router, inbox,
                new AgentRunner.Callbacks() {
                    @Override
                    public void onState(AgentRunner.State s, String detail) {
                        report(put(put(ev("state"), "state", s.name()), "detail", detail));
                    }

                    @Override
                    public void onStatus(AgentStatus s) {
                        JSONObject o = ev("status");
                        put(o, "connected", s.connected);
                        put(o, "out", s.out);
                        put(o, "in", s.in);
                        put(o, "inbox", inbox.size());
                        report(o);
                    }

                    @Override
                    public void onRefused(String id, String reason) {
                        report(put(put(ev("refused"), "id", id), "reason", reason));
                    }
                }, log, timer);
        runner.network(Collections.singletonList("127.0.0.1"));
        runner.start();

        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
        String line;
        while ((line = in.readLine()) != null) {
            JSONObject c = new JSONObject(line);
            switch (c.optString("cmd")) {
                case "receive":
                    receive(inbox, sms.sims(), c.getString("from"), c.getString("text"), c.optLong("ts", System.currentTimeMillis()));
                    break;
                case "deliver": {
                    String id = c.getString("id");
                    int n = sms.parts.getOrDefault(id, 1);
                    for (int i = 0; i < n; i++) path.onDelivered(id, i, c.optBoolean("ok", true) ? SmsPath.Delivery.DELIVERED : SmsPath.Delivery.FAILED);
                    report(put(ev("delivered"), "id", id));
                    break;
                }
                case "kill":
                    runner.kill();
                    report(ev("killed"));
                    break;
                case "quit":
                    runner.stop();
                    report(ev("stopped"));
                    return;
                default:
                    if (rcsDriver != null && rcsDriver.handle(c)) break;
                    report(put(ev("error"), "message", "unknown command"));
            }
        }
        runner.stop();
    }
}
