import { startTestGateway, connectDevice } from '../test/support/gateway.js';
test('v5', async () => {
  const tg = await startTestGateway();
  const s = await tg.addDevice('d1');
  try { await connectDevice(tg.mqttUrl, 'd1', s, { protocolVersion: 5 }); } catch (e) { console.log('ERR', (e as any).code, (e as Error).message); }
  const m = await (await fetch(tg.httpUrl + '/metrics')).text();
  console.log(m.split('\n').filter(l => l.startsWith('braid_mqtt')).join('\n'));
  await tg.close();
});
