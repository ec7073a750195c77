package net.rcsgate.phone.core;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertTrue;

import java.io.BufferedReader;
import java.io.File;
import java.io.IOException;
import java.io.InputStreamReader;
import java.io.OutputStream;
import java.io.PipedInputStream;
import java.io.PipedOutputStream;
import java.nio.charset.StandardCharsets;
import java.util.Arrays;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.Executors;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;
import java.util.function.BooleanSupplier;
import org.json.JSONObject;
import org.junit.After;
import org.junit.Before;
import org.junit.Rule;
import org.junit.Test;
import org.junit.rules.TemporaryFolder;

/** The app's side of the protocol against a scripted agent over pipes. */
public class AgentLinkTest {
    @Rule public TemporaryFolder tmp = new TemporaryFolder();

    private Inbox inbox;
    private AgentLink link;
    private OutputStream toApp; // the agent's stdout
    private BufferedReader fromApp; // the agent's stdin
    private RouterTest.FakePath path;
    private final BlockingQueue<String> seen = new LinkedBlockingQueue<>();
    private final ScheduledExecutorService timer = Executors.newSingleThreadScheduledExecutor();

    @Before
    public void setUp() throws Exception {
        inbox = new Inbox(new File(tmp.getRoot(), "inbox.log"));
        PipedInputStream appIn = new PipedInputStream(1 << 20);
        toApp = new PipedOutputStream(appIn);
        PipedInputStream agentIn = new PipedInputStream(1 << 20);
        OutputStream appOut = new PipedOutputStream(agentIn);
        fromApp = new BufferedReader(new InputStreamReader(agentIn, StandardCharsets.UTF_8));
        Router router = new Router();
        path = new RouterTest.FakePath("sms", Arrays.asList(1, 2), "sms");
        router.add(path);
        link = new AgentLink(appIn, appOut, router, inbox, new AgentLink.Listener() {
            @Override public void onStatus(AgentStatus s) { seen.add("status " + s.connected + " " + s.out + " " + s.error); }
            @Override public void onRefused(String id, String reason) { seen.add("refused " + id + " " + reason); }
            @Override public void onClosed(IOException cause) { seen.add("closed"); }
        }, timer);
        link.retryMs = 20;
    }

    @After
    public void tearDown() {
        timer.shutdownNow();
    }

    private void agentSays(String line) throws IOException {
        toApp.write((line + "\n").getBytes(StandardCharsets.UTF_8));
        toApp.flush();
    }

    private JSONObject appSays() throws Exception {
        String line = fromApp.readLine();
        assertTrue("app's output ended", line != null);
        return new JSONObject(line);
    }

    private static void eventually(String what, BooleanSupplier cond) throws InterruptedException {
        long end = System.currentTimeMillis() + 10000;
        while (!cond.getAsBoolean()) {
            if (System.currentTimeMillis() > end) throw new AssertionError("timed out waiting for " + what);
            Thread.sleep(2); // polling a condition with a deadline
        }
    }

    private String next() throws InterruptedException {
        String s = seen.poll(10, TimeUnit.SECONDS);
        assertTrue("no callback", s != null);
        return s;
    }

    @Test
    public void helloThenEventsOfferedUntilAcked() throws Exception {
        inbox.put(InboxTest.sms("sms-1", "before the agent"));
        link.start("rcsgate-phone/test");
        JSONObject hello = appSays();
        assertEquals("hello", hello.getString("type"));
        assertEquals("rcsgate-phone/test", hello.getString("name"));
        assertTrue(hello.getJSONObject("caps").has("sms"));
        assertEquals("[1,2]", hello.getJSONArray("sims").toString());

        agentSays("{\"type\":\"welcome\",\"protocol\":1,\"features\":[\"status\",\"network\"]}");
        JSONObject ev = appSays();
        assertEquals("event", ev.getString("type"));
        assertEquals("sms-1", ev.getString("id"));
        assertEquals("before the agent", ev.getString("text"));

        inbox.put(InboxTest.sms("sms-2", "while running"));
        assertEquals("sms-2", appSays().getString("id"));

        agentSays("{\"type\":\"ack\",\"id\":\"sms-1\"}");
        eventually("sms-1 acked", () -> !inbox.isWaiting("sms-1"));
        // Not taken now: offered again (same id) after the pause.
        agentSays("{\"type\":\"nack\",\"id\":\"sms-2\",\"reason\":\"busy\"}");
        assertEquals("sms-2", appSays().getString("id"));
        assertTrue(inbox.isWaiting("sms-2"));
        agentSays("{\"type\":\"ack\",\"id\":\"sms-2\"}");
        eventually("inbox empty", () -> inbox.size() == 0);

        // Refused for good: dropped and reported.
        inbox.put(InboxTest.sms("sms-3", "x"));
        assertEquals("sms-3", appSays().getString("id"));
        agentSays("{\"type\":\"nack\",\"id\":\"sms-3\",\"permanent\":true,\"reason\":\"invalid event\"}");
        assertEquals("refused sms-3 invalid event", next());
        assertFalse(inbox.isWaiting("sms-3"));
    }

    @Test
    public void commandsStatusAndNetwork() throws Exception {
        link.start("t");
        appSays(); // hello
        agentSays("{\"type\":\"welcome\",\"protocol\":1}");
        agentSays("{\"type\":\"send\",\"req\":\"7\",\"id\":\"$ev\",\"chat\":\"+12025550123\",\"text\":\"hi\",\"transport\":\"sms\"}");
        JSONObject res = appSays();
        assertEquals("result", res.getString("type"));
        assertEquals("7", res.getString("req"));
        assertTrue(res.getBoolean("ok"));
        assertEquals(Arrays.asList("$ev"), path.sent);

        agentSays("{\"type\":\"send\",\"req\":\"8\",\"id\":\"$ev2\",\"chat\":\"+12025550123\",\"text\":\"hi\",\"transport\":\"rcs\"}");
        res = appSays();
        assertFalse(res.getBoolean("ok"));
        assertTrue(res.getBoolean("permanent"));
        assertEquals("rcs is not available on this phone", res.getString("reason"));

        agentSays("not json at all");
        agentSays("{\"type\":\"future-line\"}");
        agentSays("{\"type\":\"status\",\"connected\":false,\"out\":2,\"in\":0,\"error\":\"no route\"}");
        assertEquals("status false 2 no route", next());

        link.network(Arrays.asList("192.0.2.53", "2001:db8::53"));
        JSONObject net = appSays();
        assertEquals("network", net.getString("type"));
        assertEquals("[\"192.0.2.53\",\"2001:db8::53\"]", net.getJSONArray("dns").toString());

        toApp.close(); // the agent exited
        assertEquals("closed", next());
    }

    @Test
    public void clipKeepsUtf8Whole() {
        assertEquals("ab", AgentLink.clip("ab", 256));
        assertEquals("é", AgentLink.clip("éé", 3));
    }
}
