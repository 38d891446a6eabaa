/**
 * Test support: what one gateway-and-cloud test holds (MQTT.js devices, a gateway, a cloud, temp
 * dirs) and the afterEach that lets it go, in reverse start order: devices, gateway, cloud, dirs.
 */
import type { MqttClient } from 'mqtt';
import { type TestGateway, endClient, tempDir } from './gateway.js';

export interface E2eScope<C extends { close: () => Promise<void> }> {
  /** Ended first, after each test. */
  clients: MqttClient[];
  /** Closed after the clients; a test may close it and start another in its place. */
  gw: TestGateway | null;
  /** Closed after the gateway (TestCloud, SpeedCloud); reassignable like `gw`. */
  cloud: C | null;
  /** A temp dir removed last, after each test. */
  dir: (prefix: string) => { path: string; remove: () => void };
  /** What the afterEach runs; a test calls it itself when something must wait for the teardown. */
  close: () => Promise<void>;
}

/** Registers the afterEach in the calling file (or describe) and returns the object it tears down. */
export function e2eScope<C extends { close: () => Promise<void> } = { close: () => Promise<void> }>(): E2eScope<C> {
  let dirs: Array<{ remove: () => void }> = [];
  const scope: E2eScope<C> = {
    clients: [],
    gw: null,
    cloud: null,
    dir: (prefix) => {
      const d = tempDir(prefix);
      dirs.push(d);
      return d;
    },
    close: async () => {
      for (const c of scope.clients) await endClient(c);
      scope.clients = [];
      await scope.gw?.close();
      scope.gw = null;
      await scope.cloud?.close();
      scope.cloud = null;
      for (const d of dirs) d.remove();
      dirs = [];
    },
  };
  afterEach(() => scope.close());
  return scope;
}
