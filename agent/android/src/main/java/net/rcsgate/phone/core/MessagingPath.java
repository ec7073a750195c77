package net.rcsgate.phone.core;

import java.util.List;
import java.util.Map;
import org.json.JSONObject;

/**
 * One way of reaching the phone's messaging: the platform's SMS (SmsPath) and the messaging app's
 * chats (RcsPath). The Router asks each path what it carries, assembles the hello from
 * that, and hands each command from the agent to the path that carries it.
 */
public interface MessagingPath {
    /** Short name for logs and the setup screen ("sms"). */
    String name();

    /**
     * The transports this path carries ("sms", "mms", "rcs") and, for each, what chats over it
     * support: the exec protocol's caps object (max_file_size, replies, reactions, ...). Empty
     * while the path cannot work (e.g. a permission is missing).
     */
    Map<String, JSONObject> caps();

    /** 1-based SIM slots the path can use (empty: one, the default). */
    List<Integer> sims();

    /**
     * Whether this path should carry ev when the chat names no transport ("" = any) although an
     * earlier path also could: e.g. the messaging app's path for a conversation only it can reach.
     */
    default boolean prefers(Event ev) {
        return false;
    }

    /** Sends ev (a "send" command); answers result exactly once, possibly later. */
    void send(Event ev, Result result);

    /** The Matrix user is (or stopped) typing in chat. */
    void typing(String chat, boolean active, Result result);
}
