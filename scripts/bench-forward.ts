/**
 * What both benchmark floors (scripts/bench-baseline.ts, scripts/bench-baseline-elysia.ts) do with
 * a notification: one PNM request with one `fetch`, its answer read. Shared so the gap between the
 * two floors is the framework alone.
 */
const json = { 'content-type': 'application/json' }

export async function forwardToPnm(pnmUrl: string, n: Record<string, any>): Promise<void> {
  const device = n.devices[0]
  const answer = await fetch(pnmUrl, {
    method: 'POST',
    headers: json,
    body: JSON.stringify({
      verb: 'NotifyTextMessage',
      AppId: device.app_id,
      DeviceToken: device.pushkey,
      Selector: 'SELECTOR',
      Badge: n.counts?.unread,
      Sound: 'default',
      UserName: n.sender,
      Message: n.content?.body,
      Id: n.event_id,
      ThreadId: n.room_id,
    }),
  })
  await answer.json()
}
