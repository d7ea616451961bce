/* The lab's pod sandbox process (containerd's sandbox_image, kubelet's
 * --pod-infra-container-image): it holds a pod's namespaces open and does nothing else.
 * As PID 1 of the pod it reaps children that get reparented to it, and it exits at once
 * on SIGINT or SIGTERM: PID 1 ignores signals it has no handler for, and a sandbox that
 * ignored SIGTERM would hold every pod deletion until the runtime's SIGKILL. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static void stop(int sig) { _exit(128 + sig); }

static void reap(int sig) {
  (void)sig;
  while (waitpid(-1, NULL, WNOHANG) > 0) {
  }
}

int main(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = stop;
  if (sigaction(SIGINT, &sa, NULL) < 0 || sigaction(SIGTERM, &sa, NULL) < 0)
    return 1;
  sa.sa_handler = reap;
  sa.sa_flags = SA_NOCLDSTOP;
  if (sigaction(SIGCHLD, &sa, NULL) < 0)
    return 2;
  for (;;)
    pause();
}
