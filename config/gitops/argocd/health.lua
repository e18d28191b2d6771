-- Argo CD health check for webhooks.wablast.io/WebhookConfig.
--
-- Install it with config/gitops/argocd/argocd-cm-patch.yaml (the same script,
-- inlined in the argocd-cm ConfigMap); docs/gitops.md explains the choices.
-- Test cases: health_test.yaml and testdata/, run by config/gitops/health_test.go.
--
-- Order of the rules, first match wins:
--   1. no status, or status.observedGeneration missing, -1 or not equal to
--      metadata.generation                          -> Progressing
--   2. Stalled=True                                 -> Degraded (reason: message)
--   3. Ready=False                                  -> Degraded (reason: message)
--   4. Reconciling=True                             -> Progressing
--   5. Ready=True and spec.enabled is false         -> Suspended
--      Ready=True and spec.paused is true           -> Suspended (events kept)
--   6. Ready=True                                   -> Healthy, also when the
--      Delivering condition is False: the configuration is correct and live;
--      a failing receiver is reported in the message, not as Degraded
--   7. anything else                                -> Progressing
--
-- Argo CD opens few Lua libraries (base, table, package and a restricted os;
-- no string library), so the script uses the base library only.

local function findCondition(conditions, conditionType)
  if type(conditions) ~= "table" then
    return nil
  end
  for _, condition in ipairs(conditions) do
    if type(condition) == "table" and condition.type == conditionType then
      return condition
    end
  end
  return nil
end

local function nonEmpty(value)
  return type(value) == "string" and value ~= ""
end

-- "Reason: message", or whichever of the two is set, or fallback.
local function describe(condition, fallback)
  if nonEmpty(condition.reason) and nonEmpty(condition.message) then
    return condition.reason .. ": " .. condition.message
  end
  if nonEmpty(condition.message) then
    return condition.message
  end
  if nonEmpty(condition.reason) then
    return condition.reason
  end
  return fallback
end

local hs = {}

local status = obj.status
local generation = nil
if type(obj.metadata) == "table" then
  generation = obj.metadata.generation
end
local observedGeneration = nil
if type(status) == "table" then
  observedGeneration = status.observedGeneration
end

if type(status) ~= "table" or observedGeneration == nil or observedGeneration == -1
    or (generation ~= nil and observedGeneration ~= generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to reconcile"
else
  local stalled = findCondition(status.conditions, "Stalled")
  local ready = findCondition(status.conditions, "Ready")
  local reconciling = findCondition(status.conditions, "Reconciling")
  local delivering = findCondition(status.conditions, "Delivering")
  local enabled = true
  local paused = false
  if type(obj.spec) == "table" and obj.spec.enabled == false then
    enabled = false
  end
  if type(obj.spec) == "table" and obj.spec.paused == true then
    paused = true
  end

  if stalled ~= nil and stalled.status == "True" then
    hs.status = "Degraded"
    hs.message = describe(stalled, "Stalled")
  elseif ready ~= nil and ready.status == "False" then
    hs.status = "Degraded"
    hs.message = describe(ready, "Not ready")
  elseif reconciling ~= nil and reconciling.status == "True" then
    hs.status = "Progressing"
    hs.message = describe(reconciling, "Reconciling")
  elseif ready ~= nil and ready.status == "True" and not enabled then
    hs.status = "Suspended"
    hs.message = "Deliveries are disabled (spec.enabled is false)"
  elseif ready ~= nil and ready.status == "True" and paused then
    hs.status = "Suspended"
    hs.message = "Deliveries are paused (spec.paused is true); events are kept"
  elseif ready ~= nil and ready.status == "True" then
    hs.status = "Healthy"
    if delivering ~= nil and delivering.status == "False" then
      local reason = "unknown reason"
      if nonEmpty(delivering.reason) then
        reason = delivering.reason
      end
      hs.message = "Ready; deliveries failing: " .. reason
    elseif nonEmpty(ready.message) then
      hs.message = ready.message
    else
      hs.message = "Ready"
    end
  elseif ready ~= nil then
    hs.status = "Progressing"
    hs.message = describe(ready, "Waiting for the Ready condition")
  else
    hs.status = "Progressing"
    hs.message = "Waiting for the Ready condition"
  end
end

return hs
