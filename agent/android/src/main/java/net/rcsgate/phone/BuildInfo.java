package net.rcsgate.phone;

/** The app's version (keep in step with versionName in AndroidManifest.xml). */
final class BuildInfo {
    static final String VERSION = "0.1.0-dev";

    private BuildInfo() {}
}
