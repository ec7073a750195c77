package net.rcsgate.phone.rcs;

/**
 * One node of a window's accessibility tree (AccessibilityNodeInfo on the phone, a fixture in
 * tests): what the compose driver reads and the one action it takes.
 */
public interface UiNode {
    /** The package whose window this node is in. */
    String pkg();

    /** The view id ("pkg:id/name"), or a Jetpack Compose test tag exposed as one; null if none. */
    String viewId();

    String className();

    String text();

    String description();

    boolean clickable();

    boolean enabled();

    boolean editable();

    int childCount();

    /** The i-th child, or null (it went away). */
    UiNode child(int i);

    /** Performs ACTION_CLICK; false if the node refused it. */
    boolean click();
}
