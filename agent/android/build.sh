#!/usr/bin/env bash
# Builds and tests the rcsgate phone app without Gradle or Google's SDK downloads (see
# /work/shared/notes/android-app.md for why each tool):
#
#   build.sh deps          fetch the Maven jars once (pinned by sha256 in deps/deps.sha256)
#   build.sh apk OUT.apk   the signed APK: aapt → javac → D8 → Go agent as lib/<abi>/libagent.so
#                          → zipalign → apksigner
#   build.sh check APK     what a store would check: badging, signatures, alignment, size
#   build.sh test          JUnit and Robolectric tests on the JVM (offline)
#   build.sh classes DIR   the app's plain Java classes for the integration test
#
# Tools: java/javac (17), mvn, Debian's aapt, zipalign, apksigner (.ci/run installs them).
# Signing: a debug key made once in ${XDG_CONFIG_HOME:-~/.config}/rcsgate/android-debug.keystore;
# a release key with RCSGATE_APK_KEYSTORE (+ RCSGATE_APK_KEY_ALIAS, RCSGATE_APK_KEYSTORE_PASS).
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
GO="${GO:-go}"
M2="${RCSGATE_M2:-$HOME/.m2/repository}"
BUILD="${RCSGATE_ANDROID_BUILD:-$ROOT/bin/android-build}"
MIN_SDK=26
TARGET_SDK=34
MAX_APK_BYTES=$((10 * 1024 * 1024))
VERSION="$(sed -n 's/.*android:versionName="\([^"]*\)".*/\1/p' "$HERE/AndroidManifest.xml")"

say() { echo "android: $*" >&2; }
die() { echo "android: $*" >&2; exit 1; }

jar_of() { # group artifact version [ext] → path in the Maven repository
	local g="${1//.//}" ext="${4:-jar}"
	echo "$M2/$g/$2/$3/$2-$3.$ext"
}
ANDROID_ALL="$(jar_of org.robolectric android-all 14-robolectric-10818077)"
R8="$(jar_of com.android.tools r8 8.5.35)"

# deps: every jar in deps.sha256 present and matching; Maven fetches what is missing.
deps() {
	if ! (cd "$M2" 2>/dev/null && sha256sum --quiet -c "$HERE/deps/deps.sha256" >/dev/null 2>&1); then
		command -v mvn >/dev/null || die "mvn not found (Debian: apt-get install maven)"
		say "fetching jars from Maven Central (once; about 640 MB)"
		for p in build,test sdk34 sdk35; do
			mvn -q -B -Dstyle.color=never -f "$HERE/deps/pom.xml" -P "$p" -Dmaven.repo.local="$M2" dependency:resolve >&2
		done
		(cd "$M2" && sha256sum --quiet -c "$HERE/deps/deps.sha256") ||
			die "a jar does not match deps/deps.sha256: refusing to use it"
	fi
}

need() { command -v "$1" >/dev/null || die "$1 not found (Debian: apt-get install $2)"; }

# compile_main DIR: R.java from the resources, then the app's classes into DIR/classes.
compile_main() {
	local b="$1"
	need aapt aapt
	rm -rf "$b/gen" "$b/classes" && mkdir -p "$b/gen" "$b/classes"
	aapt package -f -m -J "$b/gen" -M "$HERE/AndroidManifest.xml" -S "$HERE/res" -I "$ANDROID_ALL" \
		--min-sdk-version $MIN_SDK --target-sdk-version $TARGET_SDK --version-name "$VERSION" \
		-F "$b/resources.apk"
	find "$HERE/src/main/java" "$b/gen" -name '*.java' >"$b/sources.txt"
	javac -nowarn -Xlint:-options --release 8 -encoding UTF-8 -cp "$ANDROID_ALL" -d "$b/classes" @"$b/sources.txt"
}

# agent_libs DIR: the Go agent for each ABI as DIR/lib/<abi>/libagent.so. Go links android/arm64
# without the NDK; android/amd64 needs cgo, so x86_64 (emulators) gets the static linux build.
agent_libs() {
	local d="$1" flags="-s -w -X main.version=$VERSION"
	mkdir -p "$d/lib/arm64-v8a" "$d/lib/x86_64"
	(cd "$ROOT" &&
		CGO_ENABLED=0 GOOS=android GOARCH=arm64 "$GO" build -trimpath -ldflags="$flags" -o "$d/lib/arm64-v8a/libagent.so" ./cmd/rcsgate-agent &&
		CGO_ENABLED=0 GOOS=linux GOARCH=amd64 "$GO" build -trimpath -ldflags="$flags" -o "$d/lib/x86_64/libagent.so" ./cmd/rcsgate-agent)
}

# keystore: the release key from the environment, else the debug key (made once, never in the tree).
sign() {
	local in="$1" out="$2" ks alias pass
	if [ -n "${RCSGATE_APK_KEYSTORE:-}" ]; then
		ks="$RCSGATE_APK_KEYSTORE"
		alias="${RCSGATE_APK_KEY_ALIAS:-rcsgate}"
		[ -n "${RCSGATE_APK_KEYSTORE_PASS:-}" ] || die "RCSGATE_APK_KEYSTORE_PASS must hold the keystore's password"
		pass="env:RCSGATE_APK_KEYSTORE_PASS"
	else
		ks="${XDG_CONFIG_HOME:-$HOME/.config}/rcsgate/android-debug.keystore"
		alias=rcsgate-debug
		pass=pass:android
		if [ ! -f "$ks" ]; then
			say "making the debug signing key $ks (once: updates of an installed app need the same key)"
			mkdir -p "$(dirname "$ks")" && chmod 700 "$(dirname "$ks")"
			keytool -genkeypair -keystore "$ks" -storetype PKCS12 -storepass android -alias "$alias" \
				-keyalg EC -groupname secp256r1 -validity 10000 -dname "CN=rcsgate debug" >/dev/null 2>&1
			chmod 600 "$ks"
		fi
	fi
	apksigner sign --ks "$ks" --ks-pass "$pass" --ks-key-alias "$alias" \
		--v1-signing-enabled false --v2-signing-enabled true --v3-signing-enabled true \
		--min-sdk-version $MIN_SDK --out "$out" "$in"
}

apk() {
	local out="$1" b="$BUILD/apk"
	deps
	need zipalign zipalign
	need apksigner apksigner
	rm -rf "$b" && mkdir -p "$b/stage"
	compile_main "$b"
	java -cp "$R8" com.android.tools.r8.D8 --release --min-api $MIN_SDK --lib "$ANDROID_ALL" \
		--output "$b/stage" $(find "$b/classes" -name '*.class')
	agent_libs "$b/stage"
	cp "$b/resources.apk" "$b/unsigned.apk"
	(cd "$b/stage" && aapt add -v "$b/unsigned.apk" classes.dex lib/arm64-v8a/libagent.so lib/x86_64/libagent.so >/dev/null)
	zipalign -f -p 4 "$b/unsigned.apk" "$b/aligned.apk"
	mkdir -p "$(dirname "$out")"
	sign "$b/aligned.apk" "$out.tmp"
	mv "$out.tmp" "$out"
	rm -f "$out.tmp.idsig" "$out.idsig"
	say "$out ($(stat -c %s "$out") bytes)"
}

# check APK: the checks `make test` runs on the built APK.
check() {
	local apk="$1" badging size
	need aapt aapt
	badging="$(aapt dump badging "$apk" 2>&1)" || die "aapt dump badging $apk failed: $badging"
	expect() { grep -q -- "$1" <<<"$badging" || die "aapt dump badging: no $1"; }
	expect "package: name='net.rcsgate.phone'"
	expect "sdkVersion:'$MIN_SDK'"
	expect "targetSdkVersion:'$TARGET_SDK'"
	expect "native-code: 'arm64-v8a' 'x86_64'"
	expect "launchable-activity: name='net.rcsgate.phone.SetupActivity'"
	for p in SEND_SMS RECEIVE_SMS READ_SMS READ_CONTACTS FOREGROUND_SERVICE_SPECIAL_USE POST_NOTIFICATIONS RECEIVE_BOOT_COMPLETED; do
		expect "uses-permission: name='android.permission.$p'"
	done
	local tree
	tree="$(aapt dump xmltree "$apk" AndroidManifest.xml 2>&1)" || die "aapt dump xmltree failed: $tree"
	for c in .AgentService .SmsReceiver .SmsStatusReceiver .BootReceiver .MessagingListener .ComposeService; do
		grep -q "\"$c\"" <<<"$tree" || die "manifest lacks $c"
	done
	grep -q 'foregroundServiceType.*=(type 0x11)0x40000000' <<<"$tree" || die "AgentService is not of type specialUse"
	grep -q 'extractNativeLibs.*=(type 0x12)0xffffffff' <<<"$tree" || die "extractNativeLibs is not true"
	grep -q '"rcsgate" (Raw: "rcsgate")' <<<"$tree" || die "no intent filter for rcsgate:// links"
	apksigner verify --min-sdk-version $MIN_SDK -v "$apk" | grep -q 'Verified using v2 scheme (APK Signature Scheme v2): true' ||
		die "apksigner verify: no v2 signature"
	apksigner verify --min-sdk-version $MIN_SDK -v "$apk" | grep -q 'Verified using v3 scheme (APK Signature Scheme v3): true' ||
		die "apksigner verify: no v3 signature"
	zipalign -c -p 4 "$apk" || die "zipalign -c: not aligned"
	unzip -l "$apk" | grep -q 'lib/arm64-v8a/libagent.so' || die "no lib/arm64-v8a/libagent.so"
	size="$(stat -c %s "$apk")"
	[ "$size" -le "$MAX_APK_BYTES" ] || die "APK is $size bytes, over the budget of $MAX_APK_BYTES"
	say "$apk passes: badging, v2+v3 signatures, alignment, $size bytes (budget $MAX_APK_BYTES)"
}

# The test classpath: JUnit, Robolectric and androidx.test's classes (shipped as .aar).
test_classpath() {
	local b="$1" cp="" aar
	mvn -q -B -o -Dstyle.color=never -f "$HERE/deps/pom.xml" -P test -Dmaven.repo.local="$M2" \
		dependency:build-classpath -Dmdep.outputFile="$b/mvn-cp.txt" >&2
	for entry in $(tr ':' ' ' <"$b/mvn-cp.txt"); do
		case "$entry" in
		*.aar)
			aar="$b/aar/$(basename "$entry" .aar)"
			mkdir -p "$aar" && unzip -o -q "$entry" classes.jar -d "$aar"
			cp="$cp:$aar/classes.jar"
			;;
		*) cp="$cp:$entry" ;;
		esac
	done
	echo "${cp#:}"
}

unit_tests() {
	local b="$BUILD/test" cp sdkdir
	deps
	rm -rf "$b" && mkdir -p "$b/test-classes"
	compile_main "$b"
	cp="$(test_classpath "$b")"
	# The tests use the integration driver's fakes (src/it) and the messaging apps' fixtures.
	find "$HERE/src/test/java" "$HERE/src/it/java" -name '*.java' >"$b/test-sources.txt"
	javac -nowarn -Xlint:-options --release 8 -encoding UTF-8 -cp "$b/classes:$ANDROID_ALL:$cp" -d "$b/test-classes" @"$b/test-sources.txt"
	cp -r "$HERE/src/fixtures" "$b/test-classes/fixtures"
	# Robolectric's binary resources: the manifest and the resources aapt compiled.
	mkdir -p "$b/test-classes/com/android/tools"
	cat >"$b/test-classes/com/android/tools/test_config.properties" <<EOF
android_merged_manifest=$HERE/AndroidManifest.xml
android_resource_apk=$b/resources.apk
android_custom_package=net.rcsgate.phone
EOF
	echo "sdk=$TARGET_SDK" >"$b/test-classes/robolectric.properties"
	sdkdir="$b/sdk"
	mkdir -p "$sdkdir"
	ln -sf "$(jar_of org.robolectric android-all-instrumented 14-robolectric-10818077-i7)" "$sdkdir/"
	ln -sf "$(jar_of org.robolectric android-all-instrumented 15-robolectric-12650502-i7)" "$sdkdir/"
	# Plain JVM tests (core, sms, rcs: logic without the framework; org.json from android-all) ...
	local plain robo
	plain="$(cd "$b/test-classes" && find net/rcsgate/phone/core net/rcsgate/phone/sms net/rcsgate/phone/rcs -name '*Test.class' | sed 's|\.class$||; s|/|.|g' | sort)"
	java -cp "$b/test-classes:$b/classes:$cp:$ANDROID_ALL" org.junit.runner.JUnitCore $plain
	# ... and Robolectric tests of the framework classes, on the instrumented framework it loads
	# itself (offline, from the jars fetched above).
	robo="$(cd "$b/test-classes" && find net/rcsgate/phone -maxdepth 1 -name '*Test.class' | sed 's|\.class$||; s|/|.|g' | sort)"
	java -Drobolectric.offline=true -Drobolectric.dependency.dir="$sdkdir" -Drobolectric.logging.enabled=false \
		-cp "$b/test-classes:$b/classes:$cp:$ANDROID_ALL" org.junit.runner.JUnitCore $robo
}

# classes DIR: the app's classes (no Android needed at run time for net.rcsgate.phone.core/sms/rcs)
# plus the integration test's driver, and a file naming the classpath to run them with.
classes() {
	local out="$1" b="$BUILD/it"
	deps
	rm -rf "$b" && mkdir -p "$b/it-classes"
	compile_main "$b"
	javac -nowarn -Xlint:-options --release 8 -encoding UTF-8 -cp "$b/classes:$ANDROID_ALL" -d "$b/it-classes" \
		$(find "$HERE/src/it/java" -name '*.java')
	cp -r "$HERE/src/fixtures" "$b/it-classes/fixtures"
	mkdir -p "$out"
	echo "$b/it-classes:$b/classes:$ANDROID_ALL" >"$out/classpath"
}

case "${1:-}" in
deps) deps ;;
apk) apk "${2:?usage: build.sh apk OUT.apk}" ;;
check) check "${2:?usage: build.sh check APK}" ;;
test) unit_tests ;;
classes) classes "${2:?usage: build.sh classes DIR}" ;;
*) sed -n '2,14p' "$0" >&2; exit 2 ;;
esac
