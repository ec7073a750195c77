package net.rcsgate.phone.core;

import java.io.IOException;

/** Where a path puts what the phone received: durably, before anything is acknowledged. */
public interface EventSink {
    /** Stores ev (fsync'd) for the agent; an id stored before is not stored twice. */
    void put(Event ev) throws IOException;
}
