package net.rcsgate.phone.core;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertTrue;

import java.io.File;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.util.Collections;
import java.util.List;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.Executors;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import org.junit.Rule;
import org.junit.Test;
import org.junit.rules.TemporaryFolder;

/** The runner against a tiny shell "agent" that records its argv and says what the test asks. */
public class AgentRunnerTest {
    @Rule public TemporaryFolder tmp = new TemporaryFolder();

    private final BlockingQueue<String> states = new LinkedBlockingQueue<>();

    private AgentRunner runner(String script, Router router) throws Exception {
        File agent = tmp.newFile("agent.sh");
        Files.write(agent.toPath(), ("#!/bin/sh\n" + script).getBytes(StandardCharsets.UTF_8));
        assertTrue(agent.setExecutable(true));
        Inbox inbox = new Inbox(new File(tmp.getRoot(), "inbox.log"));
        return new AgentRunner(new AgentRunner.Command(agent.getPath(), new File(tmp.getRoot(), "state"), "info"), "t", router, inbox,
                new AgentRunner.Callbacks() {
                    @Override public void onState(AgentRunner.State s, String detail) { states.add(s + " " + detail); }
                    @Override public void onStatus(AgentStatus s) { states.add("status " + s.connected); }
                    @Override public void onRefused(String id, String reason) {}
                }, new LogFile(new File(tmp.getRoot(), "agent.log")), Executors.newSingleThreadScheduledExecutor());
    }

    private String next() throws InterruptedException {
        String s = states.poll(10, TimeUnit.SECONDS);
        assertTrue("no state", s != null);
        return s;
    }

    @Test
    public void notPairedIsNotRestarted() throws Exception {
        AgentRunner r = runner("echo 'rcsgate-agent run: agent: not paired yet (run `rcsgate-agent pair LINK`)' >&2\nexit 1\n", new Router());
        r.start();
        assertEquals("STARTING ", next());
        String s = next();
        if (s.equals("RUNNING ")) s = next(); // unless the agent exited before the hello went out
        assertEquals("NOT_PAIRED ", s);
        assertEquals(1, r.runs());
        String log = new String(Files.readAllBytes(new File(tmp.getRoot(), "agent.log").toPath()), StandardCharsets.UTF_8);
        assertTrue(log, log.contains("not paired yet"));
    }

    @Test
    public void unpairedIsNotRestarted() throws Exception {
        AgentRunner r = runner("echo 'rcsgate-agent run: unpaired — pair again: the server refused this device' >&2\nexit 3\n", new Router());
        r.start();
        assertEquals("STARTING ", next());
        String s = next();
        if (s.equals("RUNNING ")) s = next(); // unless the agent exited before the hello went out
        assertEquals("NOT_PAIRED ", s);
        assertEquals(1, r.runs());
    }

    @Test
    public void statusLinesAndArgv() throws Exception {
        File argv = new File(tmp.getRoot(), "argv");
        AgentRunner r = runner("echo \"$@\" > " + argv.getPath() + "\necho '{\"type\":\"welcome\",\"protocol\":1}'\n"
                + "echo '{\"type\":\"status\",\"connected\":true}'\ncat >/dev/null\n", new Router());
        r.network(Collections.singletonList("192.0.2.53"));
        r.start();
        assertEquals("STARTING ", next());
        assertEquals("RUNNING ", next());
        assertEquals("status true", next());
        List<String> a = Files.readAllLines(argv.toPath());
        assertTrue(a.get(0), a.get(0).matches("run --state .*/state --backend stdio --log-level info --dns 192.0.2.53"));
        assertFalse("nothing changed", r.refreshCaps());
        r.stop();
        assertEquals("STOPPED ", next());
    }
}
