/*
 * A stand-in bcryptprimitives.dll for running Go Windows binaries under Wine.
 *
 * Go's Windows runtime (1.22 and later) loads bcryptprimitives.dll at start
 * for ProcessPrng; Wine 8.0 (Debian 12) has no such DLL, so every Go binary
 * dies with "bcryptprimitives.dll not found". This DLL exports ProcessPrng
 * as a loop over RtlGenRandom (advapi32's SystemFunction036), which Wine
 * implements on the host's random source. Test use only: scripts/wine/setup.sh
 * builds it with mingw-w64 and copies it into the Wine prefix's system32.
 */
#include <limits.h>
#include <windows.h>

/* RtlGenRandom; declared here rather than through ntsecapi.h's macro. */
BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

/* ProcessPrng fills data with size random bytes. Windows documents it as
 * always returning TRUE; this one returns FALSE if RtlGenRandom fails. */
BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T size)
{
	while (size > 0) {
		ULONG chunk = size > (SIZE_T)ULONG_MAX ? ULONG_MAX : (ULONG)size;
		if (!SystemFunction036(data, chunk))
			return FALSE;
		data += chunk;
		size -= chunk;
	}
	return TRUE;
}

BOOL WINAPI DllMain(HINSTANCE instance, DWORD reason, LPVOID reserved)
{
	(void)instance;
	(void)reason;
	(void)reserved;
	return TRUE;
}
