package net.rcsgate.phone.rcs;

import java.io.IOException;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import net.rcsgate.phone.core.Event;
import net.rcsgate.phone.core.EventSink;
import net.rcsgate.phone.core.Result;

/** Small fakes the RCS path's tests share. */
final class Fakes {
    private Fakes() {}

    /** The Inbox: keeps what was put, drops repeated ids (as the Inbox does), can be made to fail. */
    static final class Sink implements EventSink {
        final List<Event> events = Collections.synchronizedList(new ArrayList<Event>());
        boolean broken;

        @Override
        public void put(Event ev) throws IOException {
            if (broken) throw new IOException("disk full");
            synchronized (events) {
                for (Event e : events) if (e.id().equals(ev.id())) return;
                events.add(ev);
            }
        }

        List<Event> kind(String kind) {
            List<Event> out = new ArrayList<>();
            synchronized (events) {
                for (Event e : events) if (e.kind().equals(kind)) out.add(e);
            }
            return out;
        }

        List<String> texts() {
            List<String> out = new ArrayList<>();
            for (Event e : kind("text")) out.add(e.text());
            return out;
        }
    }

    /** A clock the test moves. */
    static final class Clock implements Incoming.Clock, ComposeDriver.Clock, RcsPath.Clock {
        long now = 1767225600000L;

        @Override
        public long now() {
            return now;
        }
    }

    /** Tasks for later, run when the test says so. */
    static final class Later implements Incoming.Later {
        final List<Runnable> tasks = new ArrayList<>();
        final List<Long> delays = new ArrayList<>();

        @Override
        public void at(long delayMs, Runnable r) {
            tasks.add(r);
            delays.add(delayMs);
        }

        void runAll() {
            List<Runnable> now = new ArrayList<>(tasks);
            tasks.clear();
            delays.clear();
            for (Runnable r : now) r.run();
        }
    }

    /** The answer to one command. */
    static final class Answer implements Result {
        Boolean ok;
        boolean permanent;
        String reason = "";
        int calls;

        @Override
        public synchronized void ok() {
            calls++;
            ok = true;
        }

        @Override
        public synchronized void fail(boolean permanent, String reason) {
            calls++;
            ok = false;
            this.permanent = permanent;
            this.reason = reason;
        }

        @Override
        public String toString() {
            return ok == null ? "no answer" : ok ? "ok" : (permanent ? "permanent " : "transient ") + reason;
        }
    }

    /** A notification action that records its firings. */
    static final class Fired implements Posted.Action {
        final List<String> texts = new ArrayList<>();
        boolean cancelled;

        @Override
        public void fire(String text) throws Exception {
            if (cancelled) throw new Exception("PendingIntent was cancelled");
            texts.add(text);
        }
    }
}
