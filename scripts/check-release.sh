#!/usr/bin/env bash
# Checks the binaries `make release` wrote to DIST: the checksums match, every
# binary is built for the platform its name says, and every binary that this
# machine can run (natively, or under qemu-user if installed: apt-get install
# qemu-user) prints VERSION for --version; the others must contain the
# VERSION string.
#
#   scripts/check-release.sh dist v1.2.3
set -euo pipefail
dist=${1:?usage: check-release.sh DIST VERSION}
version=${2:?usage: check-release.sh DIST VERSION}
cd "$dist"

sha256sum --quiet -c SHA256SUMS
echo "SHA256SUMS: all $(wc -l < SHA256SUMS) files match"

fail=0
for f in smuxtun-*; do
	plat=${f#smuxtun-*-}   # e.g. linux-arm64 or windows-amd64.exe
	plat=${plat%.exe}
	os=${plat%-*}; arch=${plat#*-}
	desc=$(file -b "$f")
	case "$os/$arch" in
	linux/amd64)   want='ELF 64-bit LSB executable, x86-64'; run=() ;;
	linux/arm64)   want='ELF 64-bit LSB executable, ARM aarch64'; run=(qemu-aarch64) ;;
	linux/arm)     want='ELF 32-bit LSB executable, ARM'; run=(qemu-arm) ;;
	linux/mipsle)  want='ELF 32-bit LSB executable, MIPS'; run=(qemu-mipsel) ;;
	freebsd/amd64) want='ELF 64-bit LSB executable, x86-64.*FreeBSD'; run=(none) ;;
	darwin/amd64)  want='Mach-O 64-bit x86_64 executable'; run=(none) ;;
	darwin/arm64)  want='Mach-O 64-bit arm64 executable'; run=(none) ;;
	windows/amd64) want='PE32\+ executable \(console\) x86-64'; run=(none) ;;
	*) echo "$f: unexpected platform $os/$arch"; fail=1; continue ;;
	esac
	if ! grep -Eq "$want" <<<"$desc"; then
		echo "$f: is '$desc', want '$want'"; fail=1; continue
	fi
	case "$os" in linux) if grep -q 'dynamically linked' <<<"$desc"; then echo "$f: not static: $desc"; fail=1; continue; fi ;; esac
	if [ "${run[0]:-}" = none ] || { [ ${#run[@]} -gt 0 ] && ! command -v "${run[0]}" >/dev/null; }; then
		# Cannot run it here: check that the version string was linked in
		# (-trimpath keeps -ldflags out of the build information).
		if ! grep -qaF -- "$version" "$f"; then
			echo "$f: the version string $version is not in the binary"; fail=1; continue
		fi
		printf '%-36s %-10s built (%s); cannot run here; stamped %s\n' "$f" "$os/$arch" "${desc%%,*}" "$version"
		continue
	fi
	out=$("${run[@]}" "./$f" --version 2>&1) || { echo "$f --version failed: $out"; fail=1; continue; }
	if ! grep -qF -- "$version" <<<"$out"; then
		echo "$f --version printed '$out', want $version"; fail=1; continue
	fi
	printf '%-36s %-10s --version: %s\n' "$f" "$os/$arch" "$(head -1 <<<"$out")"
done
exit $fail
