package net.rcsgate.phone.core;

/** Restart pauses: 1 s doubling to 1 min, back to the start after a healthy run. */
public final class Backoff {
    static final long FIRST_MS = 1000;
    static final long MAX_MS = 60000;
    static final long HEALTHY_MS = 60000;
    private long next = FIRST_MS;

    /** The pause before the next start, given how long the last run lasted. */
    public synchronized long next(long ranMillis) {
        if (ranMillis >= HEALTHY_MS) next = FIRST_MS;
        long d = next;
        next = Math.min(next * 2, MAX_MS);
        return d;
    }
}
