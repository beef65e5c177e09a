/**
 * Account ownership under any sequence of reports and removals by several users with overlapping
 * selectors and tokens: no user's row or pusher is changed or removed by another user's request.
 * The one exception is the issue's own: a request that carries a message token is the device that
 * holds it, so a report with token T may move another user's row whose current token is T, and
 * moving that row deletes its pusher of T (the other users keep theirs: append: true).
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import fc from 'fast-check'
import type { Pusher } from '../fakes/synapse.ts'
import { APP_ID, eventually, startHarness, type Harness } from '../harness.ts'
import { RUNS } from './support.ts'

let h: Harness
let run = 0
beforeAll(async () => {
  h = await startHarness({ env: { AUTH_MODE: 'none', REPORTS_PER_MINUTE: '1000000' } })
})
afterAll(() => h.close())

const command = fc.record({
  user: fc.constantFrom('a', 'b', 'c'),
  kind: fc.constantFrom('report', 'removal'),
  selector: fc.constantFrom('1', '2', '3'),
  token: fc.constantFrom(undefined, '1', '2', '3', '4'),
})
type Command = typeof command extends fc.Arbitrary<infer T> ? T : never

describe('ownership', () => {
  test("no user's row or pusher is changed or removed by another user's request", async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(command, { minLength: 1, maxLength: 10 }), async (commands) => {
        // Each run has users, selectors and tokens of its own, so runs cannot meet in the store.
        const r = ++run
        const userId = (u: string) => `@${u}${r}:example.org`
        for (const u of ['a', 'b', 'c']) h.synapse.addUser(`${u}${r}`, 'unused')
        const selector = (s: string) => `RUN${r}:${s}`
        const token = (t: string) => `token-${r}-${t}`
        const mine = (user: string) => user.endsWith(`${r}:example.org`)
        const state = async () => ({
          rows: new Map((await h.store.listRegistrations()).filter((x) => mine(x.matrixUserId ?? '')).map((x) => [x.selector, x])),
          pushers: h.synapse.pushers().filter((p) => mine(p.user_id)).map((p) => ({ ...p })),
        })
        const key = (p: Pusher) => `${p.user_id} ${p.app_id} ${p.pushkey}`

        for (const c of commands as Command[]) {
          const actor = userId(c.user)
          const carried = c.token === undefined ? undefined : token(c.token)
          const before = await state()
          const body: Record<string, string> = { selector: selector(c.selector), username: actor, app_id_msgs: APP_ID }
          if (carried !== undefined) body.token_msgs = carried
          const path = c.kind === 'report' ? '/api/client/push_token_report' : '/api/client/account_removal_report'
          const answer = await h.request('POST', path, body)
          await eventually(async () => (await h.store.pendingJobs()).length === 0, 5000)
          const after = await state()
          const context = `${JSON.stringify(c)} -> ${answer.status} ${answer.text}`

          const stored = before.rows.get(selector(c.selector))
          const foreign = stored !== undefined && stored.matrixUserId !== actor
          const sameDevice = c.kind === 'report' && carried !== undefined && stored?.tokenMsgs === carried
          if (foreign && !sameDevice) {
            // Refused (403) or ignored (200): either way nothing at all changes.
            expect(answer.status, context).toBe(c.kind === 'report' ? 403 : 200)
            expect([...after.rows.values()], context).toEqual([...before.rows.values()])
            expect(after.pushers.map(key).sort(), context).toEqual(before.pushers.map(key).sort())
            continue
          }
          expect(answer.status, context).toBe(200)
          // Another user's row is as it was, unless the request carried its current token.
          for (const [sel, row] of before.rows) {
            if (row.matrixUserId === actor) continue
            if (c.kind === 'report' && carried !== undefined && row.tokenMsgs === carried) continue
            expect(after.rows.get(sel), context).toEqual(row)
          }
          for (const row of after.rows.values()) {
            if (row.matrixUserId !== actor) expect(before.rows.get(row.selector), context).toEqual(row)
          }
          // Another user's pushers are as they were, unless a report registered that very token.
          const afterKeys = new Set(after.pushers.map(key))
          for (const p of before.pushers) {
            if (p.user_id === actor) continue
            if (c.kind === 'report' && p.pushkey === carried) continue
            expect(afterKeys.has(key(p)), `${context}: pusher ${key(p)} gone`).toBe(true)
          }
          const beforeKeys = new Set(before.pushers.map(key))
          for (const p of after.pushers) if (p.user_id !== actor) expect(beforeKeys.has(key(p)), context).toBe(true)
        }
      }),
      { numRuns: RUNS },
    )
  }, 120_000)
})
