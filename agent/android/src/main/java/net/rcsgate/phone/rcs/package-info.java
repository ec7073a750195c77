/**
 * RCS through the phone's own messaging app (Google Messages, Samsung Messages), which stays the
 * RCS client and keeps every RCS key: what its conversation notifications show comes in
 * (NotificationParser, Incoming), Matrix replies go out through the cached reply action of the
 * conversation's notification or, without one, through its compose screen driven by an
 * accessibility service (ComposeDriver). Plain Java over small platform interfaces, so a JVM test
 * runs all of it; the framework services in net.rcsgate.phone only translate.
 */
package net.rcsgate.phone.rcs;
