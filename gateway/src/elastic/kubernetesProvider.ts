// A provider that starts each runtime as a Pod through the Kubernetes API, from an operator's Pod template (the image,
// the `nvidia.com/gpu` request, node selectors). The one-time runtime token goes in a Secret of its own, referenced by
// the Pod's containers, and both are deleted on release.
import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import type * as k8s from '@kubernetes/client-node' with { 'resolution-mode': 'import' };
import type { Log } from '../log.js';
import { ProvidedRuntime, ProviderError, RuntimeProvider, RuntimeRequest } from './provider.js';

export interface KubernetesOptions {
  /** A Pod manifest (YAML or JSON): what every runtime Pod is made from. */
  templateFile: string;
  namespace: string;
  /** A kubeconfig file; else the in-cluster service account or $KUBECONFIG, as kubectl finds them. */
  kubeconfig?: string;
  /** How often a provided Pod's phase is read, to notice it ended by itself. */
  pollMs?: number;
}

const MANAGED_BY = { 'app.kubernetes.io/managed-by': 'kernelhop', 'app.kubernetes.io/component': 'runtime' };

export class KubernetesProvider implements RuntimeProvider {
  readonly kind = 'kubernetes';

  private constructor(
    private readonly api: k8s.CoreV1Api,
    private readonly template: k8s.V1Pod,
    private readonly opts: KubernetesOptions,
    private readonly log: Log,
  ) {}

  static async open(opts: KubernetesOptions, log: Log): Promise<KubernetesProvider> {
    // The client is an ES module; the gateway is CommonJS.
    const lib = await import('@kubernetes/client-node');
    const text = await fsp.readFile(opts.templateFile, 'utf8').catch((e: Error) => {
      throw new ProviderError(`--k8s-template ${opts.templateFile}: ${e.message}`);
    });
    const template = lib.loadYaml<k8s.V1Pod>(text);
    if (template?.kind !== 'Pod' || !Array.isArray(template.spec?.containers) || template.spec.containers.length === 0) {
      throw new ProviderError(`--k8s-template ${opts.templateFile} must be a Pod manifest (kind: Pod) with at least one container`);
    }
    const kc = new lib.KubeConfig();
    if (opts.kubeconfig !== undefined) kc.loadFromFile(opts.kubeconfig);
    else kc.loadFromDefault();
    return new KubernetesProvider(kc.makeApiClient(lib.CoreV1Api), template, opts, log);
  }

  async provide(req: RuntimeRequest): Promise<ProvidedRuntime> {
    const { namespace } = this.opts;
    const name = podName(req.name);
    const labels = { ...MANAGED_BY, 'kernelhop.io/gpu-class': req.gpuClass };
    await this.api.createNamespacedSecret({
      namespace,
      body: { apiVersion: 'v1', kind: 'Secret', metadata: { name, labels }, type: 'Opaque', stringData: { token: req.enrollmentToken } },
    });
    const pod = this.pod(name, labels, req);
    try {
      await this.api.createNamespacedPod({ namespace, body: pod });
    } catch (e) {
      await this.api.deleteNamespacedSecret({ name, namespace }).catch(() => undefined);
      throw e;
    }
    this.log(`created Pod ${namespace}/${name}`, { runtime: req.name, provider: 'kubernetes' });
    let finish: (why: string) => void = () => undefined;
    const ended = new Promise<void>((resolve) => {
      const poll = setInterval(() => {
        this.api.readNamespacedPod({ name, namespace }).then(
          (p) => {
            if (p.status?.phase === 'Succeeded' || p.status?.phase === 'Failed') finish(`its Pod ${p.status.phase}`);
          },
          (e: unknown) => {
            if ((e as { code?: number }).code === 404) finish('its Pod is gone');
          },
        );
      }, this.opts.pollMs ?? 10_000);
      poll.unref();
      finish = (why) => {
        finish = () => undefined;
        clearInterval(poll);
        this.log(`provided runtime ended: ${why}`, { runtime: req.name });
        resolve();
      };
    });
    const release = async (): Promise<void> => {
      await this.api.deleteNamespacedPod({ name, namespace }).catch(notFoundIsFine);
      await this.api.deleteNamespacedSecret({ name, namespace }).catch(notFoundIsFine);
      finish('released');
    };
    return { ended, release };
  }

  /** The template with its name, labels and, in every container, the runtime's class, gateway and token. */
  private pod(name: string, labels: Record<string, string>, req: RuntimeRequest): k8s.V1Pod {
    const pod = structuredClone(this.template);
    pod.metadata = { ...pod.metadata, name, labels: { ...pod.metadata?.labels, ...labels } };
    delete pod.metadata.generateName;
    const env: k8s.V1EnvVar[] = [
      { name: 'KERNELHOP_CLASS', value: req.gpuClass },
      { name: 'KERNELHOP_GATEWAY', value: req.gateway },
      { name: 'KERNELHOP_RUNTIME_NAME', value: req.name },
      { name: 'KERNELHOP_TOKEN', valueFrom: { secretKeyRef: { name, key: 'token' } } },
    ];
    const spec = pod.spec as k8s.V1PodSpec;
    for (const c of spec.containers) c.env = [...(c.env ?? []).filter((e) => !env.some((o) => o.name === e.name)), ...env];
    // A runtime that exits (released, or lost its gateway) is not restarted in place: the autoscaler decides.
    spec.restartPolicy = 'Never';
    return pod;
  }
}

/** A DNS-1123 name: lowercase letters, digits and '-', at most 63 characters. */
function podName(runtimeName: string): string {
  const base = runtimeName.toLowerCase().replace(/[^a-z0-9-]+/g, '-').replace(/^-+|-+$/g, '').slice(0, 50);
  return `${base || 'kernelhop-runtime'}-${randomBytes(3).toString('hex')}`;
}

function notFoundIsFine(e: unknown): void {
  if ((e as { code?: number }).code !== 404) throw e;
}
