package net.rcsgate.phone.core;

/** The outcome of a command the agent gave a path: answered exactly once. */
public interface Result {
    void ok();

    /**
     * The command failed. permanent: retrying cannot help (the reason, at most 256 bytes, is shown
     * to the Matrix user); otherwise the agent offers the same event again later.
     */
    void fail(boolean permanent, String reason);
}
