package net.rcsgate.phone.rcs;

import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.List;

/**
 * Matrix → phone where no notification offers a reply: the messaging app's compose screen, driven
 * as a person would. It opens the conversation with the text filled in (ACTION_SENDTO smsto:),
 * finds the send control in the window's node tree (by view id, else by its label, per app: see
 * MessagingApp), checks the text field holds exactly our text, presses Send, and reports SENT only
 * once the text shows in the conversation and left the field; otherwise FAILED with the reason.
 * Only while the phone is unlocked: locked, the message waits (a transient failure: the agent
 * offers it again) and Matrix shows it pending.
 *
 * <p>A state machine advanced by tick(): the framework side ticks it on the app's accessibility
 * events and on a short timer while a job runs; tests tick it by hand with their own clock. One
 * job at a time; others queue.
 */
public final class ComposeDriver {
    /** The compose screen must show (with its send control) within this time. */
    public static final long OPEN_MS = 8000;
    /** The sent message must show in the conversation within this time after the press. */
    public static final long CONFIRM_MS = 10000;
    /** Jobs waiting at most (the agent hands one message at a time). */
    static final int MAX_QUEUE = 16;
    /** Nodes read per window at most, and how deep. */
    static final int MAX_NODES = 4000;
    static final int MAX_DEPTH = 64;
    /** After this many tries that opened nothing, a job fails for good. */
    static final int MAX_OPEN_TRIES = 3;

    /** The phone as the driver needs it (the accessibility service on a phone, a fake in tests). */
    public interface Screen {
        /** The accessibility service is enabled and bound. */
        boolean connected();

        /** Locked, or the screen is off: no UI may be driven. */
        boolean locked();

        boolean installed(String pkg);

        /** Opens pkg's conversation with number, text filled in (ACTION_SENDTO smsto:, sms_body). */
        void open(String pkg, String number, String text) throws Exception;

        /** The root of the active window, or null. */
        UiNode root();

        /** Leaves the messaging app (back), so the person finds the phone as they left it. */
        void leave();
    }

    /** How a job ended. Exactly one call per job. */
    public interface Outcome {
        void sent();

        /**
         * permanent: trying again cannot help (or might send twice); pressed: Send was pressed,
         * so the message may have gone out.
         */
        void failed(boolean permanent, boolean pressed, String reason);
    }

    /** Called right before Send is pressed; false stops the job (nothing was pressed). */
    public interface Gate {
        boolean pressing();
    }

    public interface Clock {
        long now();
    }

    /** Runs a task after a pause (the framework's timer); null in tests, which tick by hand. */
    public interface Timer {
        void after(long ms, Runnable r);
    }

    /** While a job runs, the window is looked at this often besides on its own events. */
    public static final long LOOK_MS = 250;

    public static final class Job {
        final String id;
        final MessagingApp app;
        final String number;
        final String text;
        final Outcome outcome;
        final Gate gate;

        public Job(String id, MessagingApp app, String number, String text, Gate gate, Outcome outcome) {
            this.id = id;
            this.app = app;
            this.number = number;
            this.text = text;
            this.gate = gate;
            this.outcome = outcome;
        }
    }

    private enum State { OPENING, CONFIRMING }

    private final Screen screen;
    private final Clock clock;
    private final ArrayDeque<Job> queue = new ArrayDeque<>();
    private final java.util.HashMap<String, Integer> openTries = new java.util.HashMap<>();
    private Job job;
    private State state;
    private long deadline;
    private int before;
    private String lastWhy = "";

    private final Timer timer;
    private boolean looking;

    public ComposeDriver(Screen screen, Clock clock, Timer timer) {
        this.screen = screen;
        this.clock = clock;
        this.timer = timer;
    }

    /** Queues j; it starts at once if nothing runs. False (and j failed) if the queue is full. */
    public boolean submit(Job j) {
        synchronized (this) {
            if (queue.size() < MAX_QUEUE) {
                queue.add(j);
                j = null;
            }
        }
        if (j != null) {
            j.outcome.failed(false, false, "the phone is busy sending other messages through " + j.app.label + "; will retry");
            return false;
        }
        tick();
        keepLooking();
        return true;
    }

    /** Ticks every LOOK_MS while jobs run (windows do not always send an event when they change). */
    private void keepLooking() {
        synchronized (this) {
            if (timer == null || looking || !busy()) return;
            looking = true;
        }
        timer.after(LOOK_MS, () -> {
            synchronized (this) {
                looking = false;
            }
            tick();
            keepLooking();
        });
    }

    public synchronized boolean busy() {
        return job != null || !queue.isEmpty();
    }

    /** Advances the running job (and starts the next): on window events and timer ticks. */
    public void tick() {
        List<Runnable> done = new ArrayList<>();
        synchronized (this) {
            for (int guard = 0; guard < MAX_QUEUE + 1; guard++) {
                if (job == null && !start(done)) break;
                if (job != null && !advance(done)) break;
            }
        }
        for (Runnable r : done) r.run(); // outcomes run outside the lock: they may submit again
    }

    /** Takes the next job and opens its compose screen; false if there is none or it ended at once. */
    private boolean start(List<Runnable> done) {
        Job j = queue.poll();
        if (j == null) return false;
        String why = null;
        boolean permanent = true;
        if (!screen.connected()) {
            why = "rcsgate's accessibility service is off: turn it on in the rcsgate app to send new chats through " + j.app.label;
        } else if (!screen.installed(j.app.pkg)) {
            why = j.app.label + " is not installed on the phone";
        } else if (screen.locked()) {
            why = "the phone is locked: the message waits until it is unlocked";
            permanent = false;
        }
        if (why != null) {
            finish(done, j, permanent, false, why);
            return true;
        }
        try {
            screen.open(j.app.pkg, j.number, j.text);
        } catch (Exception e) {
            finish(done, j, true, false, j.app.label + " could not open a conversation with this number");
            return true;
        }
        job = j;
        state = State.OPENING;
        deadline = clock.now() + OPEN_MS;
        lastWhy = j.app.label + " did not show its compose screen";
        return true;
    }

    /** One look at the window; true if the job ended (so the next may start). */
    private boolean advance(List<Runnable> done) {
        long now = clock.now();
        UiNode root = screen.root();
        boolean ours = root != null && job.app.pkg.equals(root.pkg());
        Found f = ours ? find(root, job.app, job.text) : null;
        if (state == State.OPENING) {
            if (f != null) {
                if (f.send == null) {
                    lastWhy = "could not find the Send button in " + job.app.label + " (its screen may have changed: update rcsgate); not sent";
                } else if (f.field != null && !job.text.equals(trim(f.field.text()))) {
                    lastWhy = "the text field in " + job.app.label + " held other text (a draft?); not sent";
                } else if (!f.send.enabled()) {
                    lastWhy = "the Send button in " + job.app.label + " stayed disabled; not sent";
                } else {
                    before = f.shown;
                    if (!job.gate.pressing()) {
                        return end(done, false, false, "the phone could not record the send (storage full?); will retry");
                    }
                    if (!f.send.click()) {
                        return end(done, true, true, "the Send button in " + job.app.label + " did not take the press; check the phone before sending again");
                    }
                    state = State.CONFIRMING;
                    deadline = now + CONFIRM_MS;
                    return false;
                }
            }
            if (now < deadline) return false;
            if (f == null) {
                // Nothing was pressed; the compose screen never showed (the person used the phone?).
                int tries = openTries.merge(job.id, 1, Integer::sum);
                if (tries < MAX_OPEN_TRIES) return end(done, false, false, lastWhy + "; will retry");
                openTries.remove(job.id);
                return end(done, true, false, lastWhy + " (" + tries + " tries); not sent");
            }
            return end(done, true, false, lastWhy);
        }
        // CONFIRMING
        if (f != null && f.shown > before && (f.field == null || !job.text.equals(trim(f.field.text())))) {
            openTries.remove(job.id);
            Job j = job;
            job = null;
            screen.leave();
            done.add(j.outcome::sent);
            return true;
        }
        if (now < deadline) return false;
        return end(done, true, true, "pressed Send in " + job.app.label + ", but the message did not show in the conversation within "
                + CONFIRM_MS / 1000 + " s; check the phone before sending again");
    }

    /** Ends the job; the app's window is left (back) if it is showing, so the phone is as it was. */
    private boolean end(List<Runnable> done, boolean permanent, boolean pressed, String why) {
        Job j = job;
        job = null;
        UiNode root = screen.root();
        if (root != null && j.app.pkg.equals(root.pkg())) screen.leave();
        finish(done, j, permanent, pressed, why);
        return true;
    }

    private static void finish(List<Runnable> done, Job j, boolean permanent, boolean pressed, String why) {
        done.add(() -> j.outcome.failed(permanent, pressed, why));
    }

    /** What the driver found in a window of the app. */
    static final class Found {
        UiNode send; // the clickable send control
        UiNode field; // the text field
        int shown; // nodes (not the field) whose text is ours: messages in the conversation
    }

    /** Reads the window: the send control, the text field, and how often our text shows. */
    static Found find(UiNode root, MessagingApp app, String text) {
        Found f = new Found();
        List<UiNode> nodes = new ArrayList<>();
        List<Integer> parents = new ArrayList<>();
        collect(root, -1, 0, nodes, parents);
        // The send control: by view id in the app's order, else by label.
        int sendAt = -1;
        for (String id : app.sendIds) {
            for (int i = 0; i < nodes.size() && sendAt < 0; i++) if (id.equals(nodes.get(i).viewId())) sendAt = i;
            if (sendAt >= 0) break;
        }
        for (int i = 0; i < nodes.size() && sendAt < 0; i++) {
            UiNode n = nodes.get(i);
            if (n.editable()) continue;
            if (MessagingApp.labelIn(n.description(), app.sendLabels) || MessagingApp.labelIn(n.text(), app.sendLabels)) sendAt = i;
        }
        if (sendAt >= 0) f.send = clickable(nodes, parents, sendAt);
        // The text field: by view id, else the first editable node.
        int fieldAt = -1;
        for (String id : app.composeIds) {
            for (int i = 0; i < nodes.size() && fieldAt < 0; i++) if (id.equals(nodes.get(i).viewId())) fieldAt = i;
        }
        for (int i = 0; i < nodes.size() && fieldAt < 0; i++) if (nodes.get(i).editable()) fieldAt = i;
        if (fieldAt >= 0) f.field = nodes.get(fieldAt);
        String want = trim(text);
        for (int i = 0; i < nodes.size(); i++) {
            UiNode n = nodes.get(i);
            if (i == fieldAt || n.editable() || inside(parents, i, fieldAt)) continue;
            if (!want.isEmpty() && want.equals(trim(n.text()))) f.shown++;
        }
        return f;
    }

    /** The node at i if clickable, else its first clickable descendant, else its nearest clickable ancestor. */
    private static UiNode clickable(List<UiNode> nodes, List<Integer> parents, int i) {
        if (nodes.get(i).clickable()) return nodes.get(i);
        for (int j = i + 1; j < nodes.size(); j++) {
            if (!inside(parents, j, i)) break; // pre-order: descendants follow their ancestor
            if (nodes.get(j).clickable()) return nodes.get(j);
        }
        for (int p = parents.get(i); p >= 0; p = parents.get(p)) if (nodes.get(p).clickable()) return nodes.get(p);
        return nodes.get(i); // try it anyway: some controls take clicks without saying so
    }

    private static boolean inside(List<Integer> parents, int node, int ancestor) {
        if (ancestor < 0) return false;
        for (int p = parents.get(node); p >= 0; p = parents.get(p)) if (p == ancestor) return true;
        return false;
    }

    private static void collect(UiNode n, int parent, int depth, List<UiNode> nodes, List<Integer> parents) {
        if (n == null || nodes.size() >= MAX_NODES || depth > MAX_DEPTH) return;
        int me = nodes.size();
        nodes.add(n);
        parents.add(parent);
        int kids;
        try {
            kids = Math.min(n.childCount(), MAX_NODES);
        } catch (RuntimeException e) {
            return; // the window changed under us: read what there is
        }
        for (int i = 0; i < kids && nodes.size() < MAX_NODES; i++) {
            UiNode c;
            try {
                c = n.child(i);
            } catch (RuntimeException e) {
                c = null;
            }
            collect(c, me, depth + 1, nodes, parents);
        }
    }

    static String trim(String s) {
        return s == null ? "" : s.trim();
    }
}
