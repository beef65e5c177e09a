/** MESSAGE_RETENTION_DAYS: older messages never enter the index, and leave it once they are older. */
import { expect, test } from 'bun:test'
import { rmSync } from 'node:fs'
import { eventually, tempDir } from '../harness.ts'
import { directChatSetup, text, uid } from './events.ts'
import { startMessaging } from './support.ts'

const alice = uid('alice')
const bob = uid('bob')
const DAY = 86_400_000

test('messages older than MESSAGE_RETENTION_DAYS are not stored, and stored ones are pruned once they age', async () => {
  const dir = tempDir()
  const db = `${dir}/tokens.db`
  try {
    const h = await startMessaging({ env: { MESSAGE_RETENTION_DAYS: '2', PUSH_TOKEN_DB_PATH: db } })
    await h.fetch('bob')
    const room = '!dm:example.org'
    const old = text({ room, sender: alice, ts: Date.now() - 3 * DAY }, 'too old')
    const recent = text({ room, sender: alice, ts: Date.now() - DAY }, 'recent')
    expect((await h.txn('1', [...directChatSetup(room, alice, bob), old, recent])).status).toBe(200)
    expect((await h.fetch('bob')).json.received_smss.map((i: any) => i.sms_text)).toEqual(['recent'])
    await h.close()
    // Two days later the recent message is too old as well: the start prunes it.
    const later = await startMessaging({ env: { MESSAGE_RETENTION_DAYS: '2', PUSH_TOKEN_DB_PATH: db }, compose: { now: () => Date.now() + 2 * DAY } })
    try {
      await eventually(async () => (await later.index!.countMessages()) === 0)
      expect(later.logs.parsed().some((l) => l.msg === 'old messages left the index' && l.messages === 1)).toBe(true)
    } finally {
      await later.close()
    }
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
})
