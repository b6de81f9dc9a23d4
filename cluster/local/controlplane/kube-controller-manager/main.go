// Command kube-controller-manager is the upstream controller manager, built
// from the pinned k8s.io/kubernetes module so that the local platform runs
// the real controllers (namespace deletion, garbage collection, EndpointSlices,
// kube-root-ca.crt, default service accounts). The imports follow upstream's
// cmd/kube-controller-manager/controller-manager.go, less time/tzdata, which
// only the CronJob controller needs and the platform does not run.
package main

import (
	"os"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // JSON log format registration
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // client-go metrics
	_ "k8s.io/component-base/metrics/prometheus/version"  // version metric registration
	"k8s.io/kubernetes/cmd/kube-controller-manager/app"
)

func main() {
	os.Exit(cli.Run(app.NewControllerManagerCommand()))
}
